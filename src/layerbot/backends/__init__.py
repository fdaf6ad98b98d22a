"""Batch-system backends behind one port (see base.py): local executor and Slurm."""

from __future__ import annotations

from layerbot.backends.base import Backend
from layerbot.config import Config


def make_backend(config: Config) -> Backend:
    """The configured backend (imports only the one in use)."""
    if config.backend.kind == "slurm":
        from layerbot.backends.slurm import SlurmBackend

        return SlurmBackend(config.backend.slurm, config.node_types)
    from layerbot.backends.local import LocalBackend

    return LocalBackend(config.backend.local, config.instance.data_dir / "local-backend")
