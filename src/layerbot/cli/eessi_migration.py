"""EESSI's ``app.cfg`` (and its ``repos.cfg``) -> a commented ``layerbot.toml``.

Pure: the texts in, TOML text out (``layerbot init --from-eessi`` reads the files and checks
that the result loads). Every section and setting of EESSI's bot is accounted for: it maps
to a layerbot key, or it is written as a comment saying why there is none and what to do.
Nothing is dropped silently, because a site switching bots must see every difference.

Values EESSI writes as JSON inside the INI file (``node_type_map``, ``arch_target_map``,
``repo_target_map``, per-repository ``bucket_name``, ``signing``) are read with ``json``;
``slurm_params`` strings are split like a shell would and turned into sbatch options.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerbot.config import GitHubConfig
from layerbot.core.slurm_options import RESERVED, normalize_key

__all__ = ["Migration", "MigrationError", "migrate", "parse_slurm_params"]

TomlValue = str | int | float | bool | list[str] | dict[str, str]


class MigrationError(ValueError):
    """The input is not an app.cfg that can be read (not INI, broken JSON in a value)."""


@dataclass
class _Line:
    key: str | None
    value: TomlValue | None = None
    comment: str = ""
    active: bool = True


@dataclass
class _Table:
    header: str
    lines: list[_Line] = field(default_factory=list)

    def set(self, key: str, value: TomlValue, comment: str = "") -> None:
        self.lines.append(_Line(key, value, comment))

    def off(self, key: str, value: TomlValue, comment: str) -> None:
        """A setting written commented out, with what to do."""
        self.lines.append(_Line(key, value, comment, active=False))

    def note(self, comment: str) -> None:
        self.lines.append(_Line(None, comment=comment))


@dataclass
class Migration:
    """The result: tables in order; ``render()`` gives the TOML text."""

    tables: dict[str, _Table] = field(default_factory=dict)
    node_types: list[_Table] = field(default_factory=list)
    repo_targets: list[_Table] = field(default_factory=list)
    #: Settings with no equivalent (``section.key``), also written as comments.
    unmapped: list[str] = field(default_factory=list)
    #: Every app.cfg setting read (``section.key``): none is skipped unseen.
    accounted: set[str] = field(default_factory=set)

    def table(self, header: str) -> _Table:
        return self.tables.setdefault(header, _Table(header))

    def drop(self, section: str, key: str, value: str, why: str) -> None:
        """An EESSI setting without an equivalent: a comment in the nearest table."""
        self.unmapped.append(f"{section}.{key}")
        self.accounted.add(f"{section}.{key}")
        shown = " ".join(value.split())
        shown = shown if len(shown) <= 70 else shown[:67] + "..."
        self.table("eessi").note(f"[{section}] {key} = {shown}\n  -> {why}")

    def render(self) -> str:
        out = [
            "# layerbot.toml, migrated by `layerbot init --from-eessi` from EESSI's app.cfg.",
            "# Settings of app.cfg without an equivalent are listed as comments at the end,",
            "# each with what to do instead. See docs/migrating-from-eessi.md.",
            "",
        ]
        tables = [t for h, t in self.tables.items() if h != "eessi"]
        for table in [*tables, *self.node_types, *self.repo_targets]:
            out += _render_table(table)
        if "eessi" in self.tables:
            out += ["# --- app.cfg settings without an equivalent in layerbot ---", ""]
            for line in self.tables["eessi"].lines:
                out += [f"# {part}" for part in line.comment.splitlines()] + [""]
        return "\n".join(out)


def _render_table(table: _Table) -> list[str]:
    out = [table.header]
    for line in table.lines:
        out += [f"# {part}" for part in line.comment.splitlines()] if line.comment else []
        if line.key is not None and line.value is not None:
            text = f"{_key(line.key)} = {_toml(line.value)}"
            out.append(text if line.active else f"# {text}")
    return [*out, ""]


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return "{ " + ", ".join(f"{_key(k)} = {json.dumps(v)}" for k, v in value.items()) + " }"


# --- slurm_params --------------------------------------------------------------------------

#: sbatch's short options that take a value, by long name.
_SHORT = {"p": "partition", "N": "nodes", "n": "ntasks", "c": "cpus-per-task", "t": "time",
          "A": "account", "C": "constraint", "q": "qos", "G": "gpus", "w": "nodelist",
          "M": "clusters", "x": "exclude", "J": "job-name", "o": "output", "e": "error",
          "D": "chdir", "H": "hold"}
_SHORT_FLAGS = {"H"}


def parse_slurm_params(text: str) -> tuple[dict[str, str], list[str]]:
    """``"-p rome --nodes 1 --hold"`` -> (options, problems). Flags get ``"true"``; options
    layerbot sets itself and words it cannot read become problems (said, never dropped)."""
    tokens = shlex.split(text)
    options: dict[str, str] = {}
    problems: list[str] = []
    i = 0
    while i < len(tokens):
        name, value, i = _next_option(tokens, i)
        if name is None:
            problems.append(f"{value!r} is not an sbatch option; left out")
            continue
        if name in RESERVED:
            problems.append(f"--{name}: layerbot sets it itself; {RESERVED[name]}")
            continue
        options[name] = value
    return options, problems


def _next_option(tokens: Sequence[str], i: int) -> tuple[str | None, str, int]:
    token = tokens[i]
    takes_next = i + 1 < len(tokens) and not tokens[i + 1].startswith("-")
    if token.startswith("--"):
        name, eq, value = token[2:].partition("=")
        if eq:
            return normalize_key(name), value, i + 1
        if takes_next:
            return normalize_key(name), tokens[i + 1], i + 2
        return normalize_key(name), "true", i + 1
    if token.startswith("-") and len(token) >= 2 and token[1] in _SHORT:
        name = _SHORT[token[1]]
        if len(token) > 2:
            return name, token[2:].lstrip("="), i + 1
        if token[1] in _SHORT_FLAGS or not takes_next:
            return name, "true", i + 1
        return name, tokens[i + 1], i + 2
    return None, token, i + 1


# --- the sections --------------------------------------------------------------------------

_Handler = Callable[["_Context", str, str], None]


@dataclass
class _Context:
    m: Migration
    cfg: configparser.ConfigParser
    environ: Mapping[str, str]
    exists: Callable[[str], bool]

    def get(self, section: str, key: str, default: str = "") -> str:
        return self.cfg.get(section, key, fallback=default).strip()

    def json(self, section: str, key: str) -> Any:
        text = self.get(section, key)
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise MigrationError(f"[{section}] {key} is not valid JSON: {exc}") from None

    def path(self, text: str) -> str | None:
        """``$HOME/jobs`` with this host's variables; None if something stays unresolved."""
        expanded = text
        for name, value in self.environ.items():
            expanded = expanded.replace(f"${{{name}}}", value).replace(f"${name}", value)
        if expanded.startswith("~/") and "HOME" in self.environ:
            expanded = self.environ["HOME"] + expanded[1:]
        return expanded if expanded.startswith("/") and "$" not in expanded else None


def migrate(app_cfg: str, repos_cfg: str | None = None, *,
            environ: Mapping[str, str] | None = None,
            exists: Callable[[str], bool] = lambda path: False) -> Migration:
    """The migration of an app.cfg text (and its repos.cfg text, if given).

    ``environ`` expands ``$HOME`` and the like in paths; ``exists`` says whether a file named
    in app.cfg exists here (a secret file that does not is written commented out, so that
    the result loads and says what is missing).
    """
    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read_string(app_cfg)
    except configparser.Error as exc:
        raise MigrationError(f"not an INI file: {exc}") from None
    ctx = _Context(Migration(), cfg, environ or {}, exists)
    for header in ("[instance]", "[github]", "[access]", "[reporting]", "[build]",
                   "[build.site_config]", "[backend]", "[backend.slurm]",
                   "[backend.slurm.defaults]", "[deploy]", "[deploy.s3]",
                   "[deploy.s3.buckets]"):
        ctx.m.table(header)
    for section in cfg.sections():
        handler = _SECTIONS.get(section)
        if handler is None:
            for key, value in cfg.items(section):
                ctx.m.drop(section, key, value, "a section this migration does not know; "
                           "check by hand whether layerbot needs it")
            continue
        handler(ctx, section)
    _nodes(ctx)
    _repos(ctx, repos_cfg)
    ctx.m.tables = {h: t for h, t in ctx.m.tables.items() if t.lines or h == "eessi"}
    return ctx.m


def _each(ctx: _Context, section: str, mapping: Mapping[str, _Handler]) -> None:
    for key, value in ctx.cfg.items(section):
        ctx.m.accounted.add(f"{section}.{key}")
        handler = mapping.get(key)
        if handler is None:
            ctx.m.drop(section, key, value, "a setting this migration does not know; check "
                       "by hand whether layerbot needs it")
        else:
            handler(ctx, section, key)


def _dropper(why: str) -> _Handler:
    def handle(ctx: _Context, section: str, key: str) -> None:
        ctx.m.drop(section, key, ctx.get(section, key), why)
    return handle


def _logins(text: str, empty: list[str], what: str) -> tuple[list[str], str]:
    logins = text.split()
    if logins:
        return logins, f"from {what} (GitHub logins)"
    return empty, f"{what} was empty"


# [github] ----------------------------------------------------------------------------------


def _github(ctx: _Context, section: str) -> None:
    gh = ctx.m.table("[github]")

    def app_id(c: _Context, s: str, k: str) -> None:
        value = c.get(s, k)
        if value.isdigit():
            gh.set("app_id", int(value), "from [github] app_id")
        else:
            gh.off("app_id", 0, f"TODO: [github] app_id is {value!r}, not a number")

    def app_name(c: _Context, s: str, k: str) -> None:
        name = "-".join(c.get(s, k).split()) or "layerbot"
        c.m.table("[instance]").set("name", name, "EESSI's app_name: the instance's short "
                                    "name on PRs; inst:/instance: filters match it")

    def private_key(c: _Context, s: str, k: str) -> None:
        path = c.path(c.get(s, k))
        if path is not None and c.exists(path):
            gh.set("private_key_file", path, "from [github] private_key")
        else:
            gh.off("private_key_file", c.get(s, k), "TODO: [github] private_key names no "
                   "file here; point this at the App's key (or set LAYERBOT_GITHUB_PRIVATE_KEY)")

    _each(ctx, section, {
        "app_id": app_id, "app_name": app_name, "private_key": private_key,
        "installation_id": _dropper("layerbot takes the installation from each event; "
                                    "nothing to set"),
    })
    gh.off("webhook_secret_file", "/etc/layerbot/webhook-secret",
           "EESSI reads GITHUB_APP_SECRET_TOKEN; layerbot reads this file or "
           "LAYERBOT_WEBHOOK_SECRET")
    if "repositories" not in GitHubConfig.model_fields:
        return
    gh.set("repositories", [], "TODO: the repositories this instance serves, e.g. "
           "[\"EESSI/software-layer\"] (EESSI served every repository of the installation; "
           "`serve` refuses to start while this is empty)")


# [bot_control] -----------------------------------------------------------------------------

_CHATLEVEL = {"incognito": "quiet", "minimal": "quiet", "basic": "normal", "chatty": "chatty"}


def _bot_control(ctx: _Context, section: str) -> None:
    def permission(c: _Context, s: str, k: str) -> None:
        logins, why = _logins(c.get(s, k), ["role:read"], f"[{s}] {k}")
        extra = "; EESSI's empty list let everyone; role:read is anyone who can read the " \
                "repository" if logins == ["role:read"] else ""
        c.m.table("[access]").set("command", logins, why + extra)

    def chatlevel(c: _Context, s: str, k: str) -> None:
        level = c.get(s, k)
        mapped = _CHATLEVEL.get(level)
        if mapped is None:
            c.m.drop(s, k, level, "not one of EESSI's levels; set reporting.chatlevel")
            return
        c.m.table("[reporting]").set("chatlevel", mapped, f"EESSI's {level!r}" + (
            " (layerbot still reacts with eyes and reports builds)" if level == "incognito"
            else ""))

    _each(ctx, section, {
        "command_permission": permission, "chatlevel": chatlevel,
        "command_response_fmt": _dropper(
            "layerbot's replies have a fixed format (one reply per build, edited in place); "
            "no template to set"),
    })


# [buildenv] --------------------------------------------------------------------------------

#: Written into cfg/job.cfg [site_config] by EESSI's bot, and so by layerbot's.
_SITE_CONFIG = ("shared_fs_path", "build_logs_dir", "container_cachedir", "http_proxy",
                "https_proxy", "load_modules", "local_tmp", "site_config_script",
                "cvmfs_customizations")


def _buildenv(ctx: _Context, section: str) -> None:
    handlers: dict[str, _Handler] = {key: _site_config for key in _SITE_CONFIG}
    handlers.update({
        "build_job_script": _job_script, "jobs_base_dir": _jobs_dir,
        "slurm_params": _slurm_params, "submit_command": _command("sbatch"),
        "job_handover_protocol": _handover, "job_delay_begin_factor": _delay,
        "build_permission": _build_permission, "allowed_exportvars": _exportvars,
        "clone_git_repo_via": _clone_via,
        "job_name": _dropper("layerbot names every job layerbot-<instance>-<job id>; "
                             "instances on one cluster are told apart by instance.name"),
        "no_build_permission_comment": _dropper(
            "layerbot's refusal says who may build (from access.build); no template"),
        "allow_update_submit_opts": _dropper(
            "layerbot never runs code of the PR in the bot; a command may set batch options "
            "with batch:OPTION=value where backend.slurm.overridable allows them"),
    })
    _each(ctx, section, handlers)
    ctx.m.table("[backend]").set("kind", "slurm", "EESSI's bot submits to Slurm")


def _site_config(ctx: _Context, section: str, key: str) -> None:
    value = ctx.get(section, key)
    if value:
        table = ctx.m.table("[build.site_config]")
        if not table.lines:
            table.note("[buildenv] settings EESSI's bot writes into cfg/job.cfg [site_config] "
                       "for the job scripts; layerbot writes them there too")
        table.set(key, value)


def _job_script(ctx: _Context, section: str, key: str) -> None:
    value = ctx.get(section, key)
    path = ctx.path(value)
    build = ctx.m.table("[build]")
    if path is not None:
        build.set("job_script", path, "EESSI's site job script; it runs the PR's bot/build.sh")
    else:
        build.off("job_script", value, "TODO: an absolute path to the site job script "
                  "(EESSI's bot-build.slurm); the default runs the PR's bot/build.sh directly")


def _jobs_dir(ctx: _Context, section: str, key: str) -> None:
    value = ctx.get(section, key)
    path = ctx.path(value)
    if path is not None:
        ctx.m.table("[build]").set("jobs_dir", path, f"from {value!r}")
    else:
        ctx.m.table("[build]").off("jobs_dir", value, "TODO: an absolute directory")


def _slurm_params(ctx: _Context, section: str, key: str) -> None:
    options, problems = parse_slurm_params(ctx.get(section, key))
    table = ctx.m.table("[backend.slurm.defaults]")
    for name, value in options.items():
        table.set(name, value, f"from [{section}] slurm_params")
    for problem in problems:
        ctx.m.drop(section, key, ctx.get(section, key), problem)


def _command(name: str) -> _Handler:
    def handle(ctx: _Context, section: str, key: str) -> None:
        words = ctx.get(section, key).split()
        if len(words) == 1 and "%(" not in words[0]:
            ctx.m.table("[backend.slurm]").set(name, words[0], f"from [{section}] {key}")
        else:
            ctx.m.drop(section, key, ctx.get(section, key),
                       f"layerbot runs {name} itself with its own arguments; set "
                       f"backend.slurm.{name} to the command's path and, for a "
                       "multi-cluster site, backend.slurm.clusters")
    return handle


def _handover(ctx: _Context, section: str, key: str) -> None:
    value = ctx.get(section, key)
    if value in ("hold_release", "delayed_begin"):
        ctx.m.table("[backend.slurm]").set("handover", value, "EESSI's job_handover_protocol")
    else:
        ctx.m.drop(section, key, value, "set backend.slurm.handover (hold_release or "
                   "delayed_begin)")


def _delay(ctx: _Context, section: str, key: str) -> None:
    try:
        seconds = int(float(ctx.get(section, key)) * float(
            ctx.get("job_manager", "poll_interval", "60")))
    except ValueError:
        ctx.m.drop(section, key, ctx.get(section, key), "set "
                   "backend.slurm.delayed_begin_seconds")
        return
    ctx.m.table("[backend.slurm]").set("delayed_begin_seconds", max(seconds, 1),
                                       "job_delay_begin_factor x poll_interval")


def _build_permission(ctx: _Context, section: str, key: str) -> None:
    logins, why = _logins(ctx.get(section, key), ["role:read"], f"[{section}] {key}")
    ctx.m.table("[access]").set("build", logins, why)


def _exportvars(ctx: _Context, section: str, key: str) -> None:
    try:
        pairs = json.loads(ctx.get(section, key) or "[]")
    except json.JSONDecodeError:
        pairs = []
    names = sorted({str(p).split("=", 1)[0] for p in pairs})
    ctx.m.table("[build]").set(
        "allowed_exportvars", names,
        "EESSI allowed NAME=value pairs; layerbot allows names (any value without control "
        "characters): check that this is what you want" if names else "none, as in app.cfg")


def _clone_via(ctx: _Context, section: str, key: str) -> None:
    if ctx.get(section, key) == "ssh":
        ctx.m.table("[build]").set("clone_url", "git@github.com:{repo}.git",
                                   "EESSI's clone_git_repo_via = ssh")


# [deploycfg] -------------------------------------------------------------------------------


def _deploycfg(ctx: _Context, section: str) -> None:
    uploader = _dropper("layerbot uploads, signs and writes the metadata itself "
                        "(deploy.staging = \"s3\")")
    _each(ctx, section, {
        "artefact_upload_script": uploader, "upload_to_s3_script": uploader,
        "endpoint_url": _endpoint, "options": _endpoint_options,
        "bucket_name": _buckets, "bucket": _buckets,
        "upload_policy": _policy, "deploy_permission": _deploy_permission,
        "no_deploy_permission_comment": _dropper(
            "layerbot's refusal says who may deploy (from access.deploy); no template"),
        "metadata_prefix": _seen, "artefact_prefix": _seen, "signing": _signing,
    })
    deploy = ctx.m.table("[deploy]")
    deploy.set("staging", "s3", "EESSI stages to an S3 bucket")
    deploy.set("layout", "eessi", "names and metadata EESSI's automated ingestion reads "
               "unchanged (<tarball>.meta.txt, .sig files)")
    _prefixes(ctx, section)


def _endpoint(ctx: _Context, section: str, key: str) -> None:
    url = ctx.get(section, key)
    if url.startswith(("http://", "https://")):
        ctx.m.table("[deploy.s3]").set("endpoint_url", url, f"from [{section}] {key}")
    elif url:
        ctx.m.table("[deploy.s3]").off("endpoint_url", url, "TODO: the S3 server's URL "
                                       "(none for AWS)")


def _endpoint_options(ctx: _Context, section: str, key: str) -> None:
    words = shlex.split(ctx.get(section, key))
    if len(words) == 2 and words[0] == "--endpoint-url":
        ctx.m.table("[deploy.s3]").set("endpoint_url", words[1], f"from [{section}] {key}")
    else:
        ctx.m.drop(section, key, ctx.get(section, key), "set deploy.s3.endpoint_url")


def _buckets(ctx: _Context, section: str, key: str) -> None:
    text = ctx.get(section, key)
    table = ctx.m.table("[deploy.s3.buckets]")
    if text.startswith("{"):
        for repo_id, bucket in ctx.json(section, key).items():
            table.set(repo_id, str(bucket), "per repository target id, as in app.cfg")
    elif text:
        table.set("*", text, f"from [{section}] {key}: one bucket for every repository")


def _policy(ctx: _Context, section: str, key: str) -> None:
    value = ctx.get(section, key)
    if value in ("all", "latest", "once"):
        ctx.m.table("[deploy]").set("policy", value, "EESSI's upload_policy")
    else:
        ctx.m.drop(section, key, value, "layerbot has no policy 'none': to deploy nothing, "
                   "leave access.deploy empty (written so below)")
        ctx.m.table("[access]").set("deploy", [], "upload_policy = none: nobody deploys")


def _deploy_permission(ctx: _Context, section: str, key: str) -> None:
    logins = ctx.get(section, key).split()
    ctx.m.table("[access]").set("deploy", logins, f"from [{section}] {key}" if logins else
                                "deploy_permission was empty: nobody may deploy, as in EESSI")


def _seen(ctx: _Context, section: str, key: str) -> None:
    """Read as a pair by :func:`_prefixes`."""


def _prefix_value(ctx: _Context, section: str, key: str) -> str | dict[str, str]:
    text = ctx.get(section, key)
    if text.startswith("{"):
        return {str(k): str(v) for k, v in ctx.json(section, key).items()}
    return text


def _prefixes(ctx: _Context, section: str) -> None:
    """artefact_prefix and metadata_prefix, in EESSI's own forms (a string or a map per
    repository id, with ${github_repository}, ${pull_request_number}, ${legacy_aws_path}),
    which deploy.artifact_prefix and deploy.metadata_prefix take as they are."""
    deploy = ctx.m.table("[deploy]")
    artefact = _prefix_value(ctx, section, "artefact_prefix")
    metadata = _prefix_value(ctx, section, "metadata_prefix")
    deploy.set("artifact_prefix", artefact, "EESSI's artefact_prefix" + (
        "; empty: EESSI's legacy path (${legacy_aws_path})" if not artefact else ""))
    if not metadata or metadata == artefact:
        deploy.set("metadata_prefix", metadata, "EESSI's metadata_prefix: the metadata sits "
                   "beside each tarball")
    else:
        deploy.off("metadata_prefix", metadata, "TODO: EESSI's metadata_prefix differs from "
                   "artefact_prefix; its ingestion only reads <tarball>.meta.txt beside the "
                   "tarball, so layerbot requires it empty or the same")


def _signing(ctx: _Context, section: str, key: str) -> None:
    entries = ctx.json(section, key) or {}
    keys = sorted({str(e.get("key", "")) for e in entries.values() if isinstance(e, dict)})
    paths = [p for p in (ctx.path(k) for k in keys) if p is not None]
    deploy = ctx.m.table("[deploy]")
    why = ("layerbot signs artefacts and metadata itself with ssh-keygen -Y sign (no script, "
           "no container runtime); one key for every repository")
    if len(keys) == 1 and paths:
        deploy.set("signing_key_file", paths[0], why)
    elif keys:
        deploy.off("signing_key_file", keys[0], "TODO: " + why + f"; app.cfg names {keys}")


# [architecturetargets], [repo_targets] -----------------------------------------------------


def _known_only(keys: Sequence[str]) -> Callable[[_Context, str], None]:
    """Sections read as a whole later (node types need both); unknown keys are said."""
    def handle(ctx: _Context, section: str) -> None:
        for key, value in ctx.cfg.items(section):
            ctx.m.accounted.add(f"{section}.{key}")
            if key not in keys:
                ctx.m.drop(section, key, value, "a setting this migration does not know")
    return handle


def _nodes(ctx: _Context) -> None:
    node_map = ctx.json("architecturetargets", "node_type_map")
    if node_map is None:
        node_map = _from_arch_target_map(ctx)
    for name, spec in node_map.items():
        _node(ctx, name, spec)


def _from_arch_target_map(ctx: _Context) -> dict[str, dict[str, Any]]:
    """EESSI <= 0.8: ``arch_target_map`` (os/subdir -> slurm_params) and
    ``repo_target_map`` (os/subdir -> repo ids), the equivalent of ``node_type_map``."""
    archs = ctx.json("architecturetargets", "arch_target_map") or {}
    repos = ctx.json("repo_targets", "repo_target_map") or {}
    out: dict[str, dict[str, Any]] = {}
    for target, params in archs.items():
        os_name, _, subdir = str(target).partition("/")
        out[subdir.replace("/", "-")] = {"os": os_name, "cpu_subdir": subdir,
                                         "slurm_params": params,
                                         "repo_targets": repos.get(target, [])}
    return out


def _node(ctx: _Context, name: str, spec: Mapping[str, Any]) -> None:
    table = _Table("[[node_types]]")
    table.set("name", name, "from [architecturetargets]")
    table.set("cpu_target", str(spec.get("cpu_subdir", "")))
    if spec.get("accel"):
        table.set("accelerator", str(spec["accel"]))
    table.set("os", str(spec.get("os", "linux")))
    repos = [str(r) for r in spec.get("repo_targets", [])]
    if repos:
        table.set("repo_targets", repos)
    else:
        table.note("TODO: app.cfg names no repository target for this node type (EESSI then "
                   "builds for the build container's default); layerbot builds for every "
                   "[[repo_targets]]: list the ids here to narrow it")
    options, problems = parse_slurm_params(str(spec.get("slurm_params", "")))
    for problem in problems:
        table.note(f"slurm_params: {problem}")
    table.set("options", options, f"from slurm_params {spec.get('slurm_params', '')!r}")
    ctx.m.node_types.append(table)


def _repos(ctx: _Context, repos_cfg: str | None) -> None:
    """[[repo_targets]] from repos.cfg; ids the node types name but repos.cfg lacks still get
    an entry (the configuration refuses unknown ids), saying so."""
    defined: dict[str, Mapping[str, str]] = {}
    if repos_cfg is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(repos_cfg)
        except configparser.Error as exc:
            raise MigrationError(f"repos.cfg is not an INI file: {exc}") from None
        defined = {s: dict(parser.items(s)) for s in parser.sections()}
    named = [r for t in ctx.m.node_types for ln in t.lines
             if ln.key == "repo_targets" and isinstance(ln.value, list) for r in ln.value]
    for repo_id in dict.fromkeys([*defined, *named]):
        ctx.m.repo_targets.append(_repo_table(repo_id, defined.get(repo_id)))
    repos_dir = ctx.get("repo_targets", "repos_cfg_dir")
    if repos_dir:
        ctx.m.drop("repo_targets", "repos_cfg_dir", repos_dir,
                   "its repos.cfg became the [[repo_targets]] above; its other files "
                   "(config bundles) must be provided to jobs by the site job script")


def _repo_table(repo_id: str, section: Mapping[str, str] | None) -> _Table:
    table = _Table("[[repo_targets]]")
    table.set("id", repo_id)
    if section is None:
        table.note("TODO: not defined in repos.cfg (none given, or missing there)")
        return table
    table.set("name", section.get("repo_name", ""), "from repos.cfg")
    table.set("version", section.get("repo_version", ""))
    table.set("container", section.get("container", ""))
    facts = {k: " ".join(v.split()) for k, v in section.items()
             if k not in ("repo_name", "repo_version", "container")}
    if facts:
        table.set("facts", facts, "passed to the job in cfg/job.cfg [repository]")
    return table


# [event_handler], [job_manager], comment templates, [clean_up] ------------------------------


def _job_manager(ctx: _Context, section: str) -> None:
    def poll(c: _Context, s: str, k: str) -> None:
        try:
            c.m.table("[backend]").set("poll_seconds", float(c.get(s, k)), "EESSI's "
                                       "poll_interval")
        except ValueError:
            c.m.drop(s, k, c.get(s, k), "set backend.poll_seconds")

    _each(ctx, section, {
        "log_path": _LOG, "poll_interval": poll,
        "poll_command": _command("squeue"), "scontrol_command": _command("scontrol"),
        "job_ids_dir": _dropper("layerbot keeps its jobs in its database; nothing to set"),
    })


_LOG = _dropper("layerbot logs to stderr (logging.format = \"json\" for collectors); "
                "redirect it or let systemd keep it")


def _templates(ctx: _Context, section: str) -> None:
    for key, value in ctx.cfg.items(section):
        ctx.m.drop(section, key, value, "layerbot reports each build in one reply, edited as "
                   "its jobs move, in a fixed format: no template to set")


def _clean_up(ctx: _Context, section: str) -> None:
    _each(ctx, section, {
        "trash_bin_dir": _dropper("layerbot archives job directories of closed PRs under "
                                  "its data_dir after build.archive_after_days"),
        "moved_job_dirs_comment": _dropper("layerbot archives silently; no template"),
    })


_SECTIONS: dict[str, Callable[[_Context, str], None]] = {
    "github": _github,
    "bot_control": _bot_control,
    "buildenv": _buildenv,
    "deploycfg": _deploycfg,
    "architecturetargets": _known_only(("arch_target_map", "node_type_map")),
    "repo_targets": _known_only(("repo_target_map", "repos_cfg_dir")),
    "event_handler": lambda ctx, section: _each(ctx, section, {"log_path": _LOG}),
    "job_manager": _job_manager,
    "submitted_job_comments": _templates,
    "new_job_comments": _templates,
    "running_job_comments": _templates,
    "finished_job_comments": _templates,
    "download_pr_comments": _templates,
    "clean_up": _clean_up,
}
