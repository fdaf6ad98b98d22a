"""The ingest command: its template and placeholders, and running it for one artifact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import string
from pathlib import Path

from layerbot.deploy.ingest.errors import IngestError
from layerbot.deploy.ingest.policy import IngestItem

DEFAULT_COMMAND = (
    "cvmfs_server",
    "ingest",
    "--tar_file",
    "{tarball}",
    "--base_dir",
    "{base_dir}",
    "{repository}",
)
#: Placeholders of the command and base-dir templates.
COMMAND_FIELDS = (
    "tarball",
    "repository",
    "base_dir",
    "repo_target",
    "target",
    "key",
    "sha256",
    "repo",
    "pr",
    "instance",
)


_OUTPUT_TAIL_LINES = 15


def _check_template(template: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise IngestError(f"ingest command template {template!r}: {exc}") from None
    unknown = names - set(COMMAND_FIELDS)
    if unknown:
        raise IngestError(
            f"ingest command template {template!r}: unknown placeholder(s) {sorted(unknown)}; "
            f"known ones are {list(COMMAND_FIELDS)}"
        )


def command_values(item: IngestItem, base_dir_template: str) -> dict[str, str]:
    """The values of the placeholders (:data:`COMMAND_FIELDS`) for one artifact."""
    info = item.metadata.layerbot
    values = {
        "tarball": str(item.tarball),
        "repository": item.repository,
        "repo_target": item.repo_target,
        "target": info.target if info else "",
        "key": item.key,
        "sha256": item.sha256,
        "repo": item.metadata.link2pr.repo,
        "pr": str(item.metadata.link2pr.pr),
        "instance": info.instance if info else "",
        "base_dir": "",
    }
    values["base_dir"] = base_dir_template.format(**values)
    return values


async def run_command(
    argv: list[str], item: IngestItem, log_dir: Path, time_limit: float
) -> tuple[int, str]:
    """(exit code, output) of the command; the output is also kept in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (one mkdir, not worth a thread)
    log_path = log_dir / f"{hashlib.sha256(item.id.encode()).hexdigest()[:24]}.log"
    env = {
        **os.environ,
        "LAYERBOT_INGEST_KEY": item.key,
        "LAYERBOT_INGEST_SHA256": item.sha256,
        "LAYERBOT_INGEST_REPOSITORY": item.repository,
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc.strerror}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        text = out.decode(errors="replace") + f"\n(killed after {time_limit}s)"
        log_path.write_text(text)
        return -9, text
    text = out.decode(errors="replace")
    log_path.write_text(text)
    return proc.returncode if proc.returncode is not None else -1, text
