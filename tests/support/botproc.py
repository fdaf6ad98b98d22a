"""A real `layerbot serve` process for end-to-end tests, and the config it reads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

SECRET = "test-webhook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_role(pid: int) -> str:
    """What a child of `layerbot serve` is: its worker (started by multiprocessing's
    spawn), or multiprocessing's resource tracker (a small helper that is not the worker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"child-{pid}"
    if b"resource_tracker" in command:
        return "resource-tracker"
    return "worker" if b"spawn_main" in command else f"child-{pid}"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML writing for test configs: tables, arrays of tables, scalars."""
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict | list) or (
            isinstance(value, list) and value and not isinstance(value[0], dict)
        ):
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for k, v in value.items():
                if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
                    continue
                lines.append(f"{k} = {toml_value(v)}")
            for k, v in value.items():
                if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
                    lines.append(f"\n[{key}.{k}]")
                    lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: tables are merged one level deep, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        out[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return out


def write_config(
    directory: Path,
    *,
    api_url: str,
    app_id: int,
    private_key_pem: str,
    port: int,
    store_url: str | None = None,
    instance: str = "test-a",
    extra: dict[str, Any] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.pem").write_text(private_key_pem)
    (directory / "secret").write_text(SECRET)
    data: dict[str, Any] = {
        "github": {
            "app_id": app_id,
            "private_key_file": "app.pem",
            "webhook_secret_file": "secret",
            "api_url": api_url,
            # Tests serve whichever repository they send events of; the allow-list itself
            # is tested in tests/adversarial/test_authz_gaps.py.
            "repositories": ["*"],
        },
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"url": store_url or f"sqlite:///{directory / 'layerbot.db'}"},
        "instance": {"name": instance, "data_dir": str(directory / "data")},
        "logging": {"format": "json", "level": "info"},
        "inbox": {"backoff_seconds": 0.2},
        "outbox": {"backoff_seconds": 0.2, "backoff_max_seconds": 2},
        "deliveries": {"recover_interval_seconds": 0},
        "reporting": {"min_edit_interval_seconds": 0.2},
    }
    data = merged(data, extra or {})
    path = directory / "layerbot.toml"
    path.write_text(to_toml(data))
    # As a site must (doctor checks it): the job user may read none of the bot's files.
    for secret in (path, directory / "app.pem", directory / "secret"):
        secret.chmod(0o600)
    return path


class BotProcess:
    """`layerbot serve` in a subprocess with its log in a file."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = config.parent / f"serve-{port}.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> BotProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "layerbot", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"layerbot serve exited:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"layerbot serve did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> BotProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
