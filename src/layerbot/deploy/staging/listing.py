"""Listings: which artifacts have their metadata staged (the marker written last), and
what else of them is there.
"""

from __future__ import annotations

from collections.abc import Mapping

from layerbot.deploy.layout import LAYERBOT, Layout
from layerbot.deploy.staging.protocol import PendingArtifact, StagedObject


def _pending_from(
    objects: Mapping[str, StagedObject], layout: Layout = LAYERBOT
) -> list[PendingArtifact]:
    pending = []
    sig, meta_sig = layout.sig_suffix, layout.meta_sig_suffix
    for key, obj in objects.items():
        if not key.endswith(layout.meta_suffix):
            continue
        base = key[: -len(layout.meta_suffix)]
        artifact = objects.get(base)
        pending.append(
            PendingArtifact(
                key=base,
                meta_key=key,
                sig_key=base + sig,
                meta_sig_key=base + meta_sig,
                staged_at=obj.modified,
                has_artifact=artifact is not None,
                has_sig=base + sig in objects,
                has_meta_sig=base + meta_sig in objects,
                size=artifact.size if artifact else None,
            )
        )
    return sorted(pending, key=lambda p: (p.staged_at, p.key))
