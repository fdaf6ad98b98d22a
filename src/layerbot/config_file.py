"""Where layerbot.toml is and what its paths mean: the part of loading that needs no models.

``config.load`` validates the whole file with pydantic models, which costs more than a
whole `layerbot jobs` should (``tests/cli/test_start.py``). A read-only command that needs
one setting, the store's URL, reads it here with the same rules (which file, paths relative
to the file) and leaves the checking of the rest to the commands that use it. Anything
unusual (no file where one is named, TOML that does not parse, a setting of the wrong type)
gives no answer, and the caller loads the configuration in full, which says what is wrong.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "layerbot.toml"
CONFIG_ENV = "LAYERBOT_CONFIG"
DEFAULT_DATA_DIR = Path("/var/lib/layerbot")
SQLITE_PREFIX = "sqlite:///"

#: The settings that are paths; a relative one is relative to the file.
PATH_KEYS = {
    ("github", "private_key_file"),
    ("github", "webhook_secret_file"),
    ("instance", "data_dir"),
    ("build", "mirrors_dir"),
    ("build", "jobs_dir"),
    ("deploy", "staging_dir"),
    ("deploy", "signing_key_file"),
    ("ingest", "allowed_signers_file"),
    ("ingest", "state_dir"),
    ("web", "session_secret_file"),
    ("web", "oauth_client_secret_file"),
    ("agent", "token_file"),
    ("agent", "ca_file"),
}


def find_config_file(explicit: Path | None) -> Path | None:
    """--config, else $LAYERBOT_CONFIG, else ./layerbot.toml if it exists."""
    if explicit is not None:
        return explicit
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.exists() else None


def resolve_relative_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file, not to the working directory."""
    out = dict(raw)
    for section, key in PATH_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            out[section] = {**out[section], key: str(base / value)}
    store = out.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        url = store["url"]
        if url.startswith(SQLITE_PREFIX) and not url.startswith(SQLITE_PREFIX + "/") \
                and url != SQLITE_PREFIX:
            rel = url[len(SQLITE_PREFIX):]
            if rel and not rel.startswith(":memory:"):
                out["store"] = {**store, "url": SQLITE_PREFIX + str(base / rel)}
    return out


def resolve_store_url(url: str, data_dir: Path) -> str:
    """``store.url``, or the SQLite file in the data directory when it is not set."""
    return url or f"{SQLITE_PREFIX}{data_dir / 'layerbot.db'}"


def quick_store_url(explicit: Path | None) -> str | None:
    """The store's URL as ``config.load(explicit).store_url`` gives it, without checking
    the rest of the file; None where only a full load can answer (see the module's doc)."""
    file = find_config_file(explicit)
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
    raw = resolve_relative_paths(raw, (file.parent if file is not None else Path.cwd())
                                 .resolve())
    url = _setting(raw, "store", "url", "")
    data_dir = _setting(raw, "instance", "data_dir", str(DEFAULT_DATA_DIR))
    if url is None or data_dir is None or not data_dir:
        return None
    return resolve_store_url(url, Path(data_dir))


def _setting(raw: dict[str, Any], section: str, key: str, default: str) -> str | None:
    """A string setting or its default; None if the file has something else there."""
    table = raw.get(section, {})
    if not isinstance(table, dict):
        return None
    value = table.get(key, default)
    return value if isinstance(value, str) else None
