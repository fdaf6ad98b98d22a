"""`layerbot init --from-eessi APP_CFG`: the file reading around eessi_migration (pure).

Kept apart from cli_init so that the Slurm probe and the migration each stay one concern,
and so that neither is imported unless its command runs.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import typer

from layerbot.cli.eessi_migration import MigrationError, migrate


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        typer.echo(f"cannot read {what} {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def _repos_cfg_of(app_cfg: str) -> Path | None:
    """repos.cfg in app.cfg's repos_cfg_dir, when it exists on this host."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(app_cfg)
    except configparser.Error:
        return None  # migrate() says what is wrong with the file
    directory = parser.get("repo_targets", "repos_cfg_dir", fallback="").strip()
    candidate = Path(os.path.expandvars(directory)) / "repos.cfg" if directory else None
    return candidate if candidate is not None and candidate.is_file() else None


def init_from_eessi(app_cfg_path: Path, repos_cfg_path: Path | None, output: Path) -> None:
    from layerbot import config as config_mod

    app_cfg = _read(app_cfg_path, "app.cfg")
    repos_path = repos_cfg_path or _repos_cfg_of(app_cfg)
    repos = _read(repos_path, "repos.cfg") if repos_path is not None else None
    try:
        migration = migrate(app_cfg, repos, environ=os.environ, exists=os.path.isfile)
    except MigrationError as exc:
        typer.echo(f"cannot migrate {app_cfg_path}: {exc}", err=True)
        raise typer.Exit(2) from None
    output.write_text(migration.render())
    try:
        config_mod.load(output)
    except config_mod.ConfigError as exc:  # a bug of the migration, not the operator's
        typer.echo(f"the written file does not load: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(
        f"wrote {output}: {len(migration.node_types)} node type(s), "
        f"{len(migration.repo_targets)} repository target(s)"
        + (f" (from {repos_path})" if repos_path else " (no repos.cfg: give --repos-cfg)")
        + f"; {len(migration.unmapped)} app.cfg setting(s) have no equivalent (comments at "
        "the end say what to do); next: resolve the TODO comments, then `layerbot doctor`")
