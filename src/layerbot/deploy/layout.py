"""Names in the staging area: which suffixes the metadata and signatures get, and how an
artifact's key is made from a template.

Two layouts, chosen by ``deploy.layout``:

- ``layerbot`` (the default): ``<key>.meta.json`` beside the artifact. The JSON suffix
  says what the file is; nothing outside layerbot reads it.
- ``eessi``: exactly what EESSI's automated ingestion (EESSI/filesystem-layer,
  ``scripts/automated_ingestion``) lists and downloads: a ``.tar.gz`` object with
  ``<key>.meta.txt`` at the same key, ``<key>.sig`` and ``<key>.meta.txt.sig``. A site
  that keeps EESSI's Stratum-0 ingestion switches bots without touching it.

Key templates accept layerbot's ``{repo}``-style fields and EESSI's ``${github_repository}``,
``${pull_request_number}`` and ``${legacy_aws_path}`` (what ``eessi-upload-to-staging``
expands), so a migrated ``artefact_prefix`` works as written. Pure: no I/O.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from enum import StrEnum

SIG_SUFFIX = ".sig"

#: EESSI's variables -> layerbot's field of the same value.
_EESSI_VARS = {
    "github_repository": "repo",
    "pull_request_number": "pr",
    "legacy_aws_path": "legacy_aws_path",
}
_TARBALL_SUFFIX = ".tar.gz"


class LayoutName(StrEnum):
    LAYERBOT = "layerbot"
    EESSI = "eessi"


@dataclass(frozen=True)
class Layout:
    name: LayoutName
    meta_suffix: str
    #: Used when ``deploy.artifact_prefix`` is empty for a repository target.
    default_prefix: str

    @property
    def sig_suffix(self) -> str:
        return SIG_SUFFIX

    @property
    def meta_sig_suffix(self) -> str:
        return self.meta_suffix + SIG_SUFFIX


LAYERBOT = Layout(LayoutName.LAYERBOT, ".meta.json", "{repo}/pr-{pr}/{repo_target}/{target}")
# EESSI's bot falls back to the legacy path when its prefixes are empty.
EESSI = Layout(LayoutName.EESSI, ".meta.txt", "${legacy_aws_path}")


def layout_named(name: str) -> Layout:
    return EESSI if LayoutName(name) is LayoutName.EESSI else LAYERBOT


class TemplateError(ValueError):
    """A key template that cannot be filled; the message says which placeholder."""


def legacy_aws_path(filename: str) -> str:
    """EESSI's legacy prefix of a tarball: ``eessi-2023.06-software-linux-x86_64-amd-zen2-
    1700000000.tar.gz`` -> ``2023.06/software/linux/x86_64/amd/zen2/1700000000``.

    As ``eessi-upload-to-staging`` makes it: dashes (runs of them) become slashes, the
    leading ``eessi`` component and the ``.tar.gz`` go.
    """
    stem = filename[: -len(_TARBALL_SUFFIX)] if filename.endswith(_TARBALL_SUFFIX) else filename
    path = re.sub(r"-+", "/", stem)
    return re.sub(r"^eessi.", "", path)


def expand_eessi_vars(template: str, fields: dict[str, str]) -> str:
    """Replace ``${github_repository}`` and friends; unknown ``$`` names are errors."""
    tmpl = string.Template(template)
    if not tmpl.is_valid():
        raise TemplateError(f"key template {template!r}: a '$' that is not ${{name}}")
    names = set(tmpl.get_identifiers())
    unknown = names - set(_EESSI_VARS)
    if unknown:
        raise TemplateError(
            f"key template {template!r}: unknown variable(s) {sorted(unknown)}; EESSI's "
            f"known ones are {sorted(_EESSI_VARS)}"
        )
    values = {name: fields[_EESSI_VARS[name]] for name in names if _EESSI_VARS[name] in fields}
    missing = names - set(values)
    if missing:
        raise TemplateError(f"key template {template!r}: no value for {sorted(missing)}")
    # Braces in a value would be read as fields by the str.format that follows.
    return tmpl.substitute({k: v.replace("{", "{{").replace("}", "}}") for k, v in values.items()})
