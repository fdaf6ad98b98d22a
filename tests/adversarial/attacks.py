"""Attacks shared by the adversarial modules of more than one backend."""

from __future__ import annotations

import os
from pathlib import Path

from tests.adversarial.conftest import ENV_SESSION_SECRET, Adversary

#: A PR's job script that goes for every secret of the bot (issue 9, item 1). Whatever it
#: can read it copies to a marker directory *and* prints into its log and result summary.
STEAL = r"""#!/usr/bin/env bash
out={marker_dir}/identity
mkdir -p "$out"
id -u > "$out/uid"
for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if grep -q layerbot "/proc/$pid/cmdline" 2>/dev/null; then
        cat "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' >> "$out/environ"
    fi
done
for f in {config} {key_file} {webhook_secret_file} {session_secret_file} \
         {signing_key_file} {db}; do
    cat "$f" >> "$out/files" 2>/dev/null && echo "read $f"
done
ls -la {bot_dir} {data_dir} >> "$out/listing" 2>&1
touch {data_dir}/planted 2>/dev/null && echo "wrote into the data dir"
cat "$out/environ" "$out/files" 2>/dev/null | head -c 3000
summary=$(cat "$out/files" 2>/dev/null | head -c 500 | tr -d '"\\\n')
echo "{{\"status\": \"success\", \"summary\": \"stolen: $summary\"}}" > result.json
"""


def assert_nothing_stolen(adversary: Adversary) -> None:
    """After :data:`STEAL` ran: it ran as another user, and read and wrote nothing."""
    out = Path(adversary.places()["marker_dir"]) / "identity"
    assert (out / "uid").read_text().strip() != str(os.geteuid()), "the job ran as the bot"
    stolen = "".join((out / n).read_text(errors="replace")
                     for n in ("environ", "files") if (out / n).exists())
    for secret in [*adversary.secrets, ENV_SESSION_SECRET]:
        for line in secret.splitlines():
            if len(line) >= 16 and not line.startswith("-----"):
                assert line not in stolen, "the job read a secret of the bot"
    assert "[github]" not in stolen, "the job read the bot's configuration"
    assert "SQLite format" not in stolen, "the job read the database"
    assert not (adversary.data_dir / "planted").exists(), "the job wrote into the data dir"
