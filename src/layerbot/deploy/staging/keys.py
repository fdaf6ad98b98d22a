"""Object keys: safe relative paths, filled in from key templates (``deploy.artifact_prefix``)."""

from __future__ import annotations

import re
import string

from layerbot.deploy.layout import TemplateError, expand_eessi_vars, legacy_aws_path
from layerbot.deploy.staging.errors import StagingError

_KEY_FIELDS = ("repo", "pr", "repo_target", "target", "job", "filename", "legacy_aws_path")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._\-/+=@,]+$")


def check_key(key: str) -> str:
    """A key that is also a safe relative path (DirStaging writes it as one)."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or not _SAFE_KEY.match(key)
    ):
        raise StagingError(
            f"object key {key!r} is not usable: use letters, digits and ._-/+=@, "
            "with no empty, '.' or '..' components"
        )
    return key


def render_key(template: str, **fields: object) -> str:
    """Fill a key template (``deploy.artifact_prefix``); unknown placeholders are errors.

    EESSI's ``${...}`` variables are expanded first, from the same fields."""
    values = {k: str(v) for k, v in fields.items()}
    if "filename" in values:
        values.setdefault("legacy_aws_path", legacy_aws_path(values["filename"]))
    try:
        template = expand_eessi_vars(template, values)
    except TemplateError as exc:
        raise StagingError(str(exc)) from None
    fields = dict(values)
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = names - set(_KEY_FIELDS)
    if unknown:
        raise StagingError(
            f"key template {template!r}: unknown placeholder(s) {sorted(unknown)}; "
            f"known ones are {list(_KEY_FIELDS)}"
        )
    missing = names - set(fields)
    if missing:
        raise StagingError(f"key template {template!r}: no value for {sorted(missing)}")
    key = template.format(**{k: str(v) for k, v in fields.items()})
    return check_key(re.sub(r"/+", "/", key).strip("/"))


def artifact_key(prefix_template: str, filename: str, **fields: object) -> str:
    prefix = render_key(prefix_template, filename=filename, **fields)
    return check_key(f"{prefix}/{filename}")
