"""A PR's job script poisons the shared mirror (issue 9, item 4), on a real `layerbot serve`.

Before: a job's checkout was a ``git worktree`` of the repository's mirror, so ``.git``
named the mirror and the job could add a ``filter.*.smudge`` to its config, an attributes
file and a hook; the bot's next ``git read-tree -u`` for another PR ran the filter's command
in the bot's process, with its environment, and the filter decided what that PR checked out.

The attacker's ``bot/build.sh`` below finds the mirror the way its checkout shows it (the
old worktree's ``.git`` file, or the new repository's ``objects/info/alternates``) and plants
all of it. Afterwards a victim PR is built: it must check out exactly its own content, no
command of the attacker may have run (a marker file), and the mirror must hold nothing the
bot did not write. Where jobs run as another user (H1's ``build.run_as``) the job cannot write
there at all; where they run as the bot's own user, the bot repairs the mirror before it uses
it, and this test covers that case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import Session, start_session
from tests.support.webhooks import DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")

POISON = """#!/usr/bin/env bash
# Find the shared mirror from the checkout.
if [ -f .git ]; then
    gitdir=$(sed 's/^gitdir: //' .git)
    mirror=$(cd "$gitdir" && cd "$(cat commondir)" && pwd)
else
    mirror=$(dirname "$(head -n1 .git/objects/info/alternates)")
fi
echo "mirror: $mirror"
git config -f "$mirror/config" filter.evil.smudge 'touch {marker}; echo POISONED'
git config -f "$mirror/config" filter.evil.required true
git config -f "$mirror/config" merge.evil.driver 'touch {marker}'
mkdir -p "$mirror/info" "$mirror/hooks" .git/info
echo '* filter=evil merge=evil' > "$mirror/info/attributes"
echo '* filter=evil' > .git/info/attributes
printf '#!/bin/sh\\ntouch {marker}\\n' > "$mirror/hooks/post-checkout"
chmod +x "$mirror/hooks/post-checkout"
git config filter.evil.smudge 'touch {marker}'  # its own repository: harmless
echo '{{"status": "success", "summary": "planted", "artifacts": []}}' > result.json
"""

VICTIM = """#!/usr/bin/env bash
v=$(cat VERSION)
echo "{\\"status\\": \\"success\\", \\"summary\\": \\"built version $v\\"}" > result.json
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with start_session(tmp_path_factory.mktemp("mirror-poison")) as session:
        yield session


def _mirrors(env: Session) -> list[Path]:
    root = env.bot.config.parent / "data" / "mirrors"
    found = [p for p in root.rglob("*.git") if (p / "HEAD").is_file()]
    assert found, f"no mirror under {root}"
    return found


def test_a_job_cannot_poison_the_mirror_for_other_prs(env: Session, tmp_path: Path) -> None:
    marker = tmp_path / "attacker-command-ran"
    env.pr(1, files={"bot/build.sh": POISON.format(marker=marker)})
    env.comment(1, "bot: build")
    assert "1/1 done, 1 succeeded" in env.build_reply(1).body

    env.pr(2, files={"VERSION": "victim's own\n", "bot/build.sh": VICTIM})
    env.comment(2, "bot: build")
    reply = env.build_reply(2)

    assert "built version victim's own" in reply.body, reply.body
    assert not marker.exists(), "a command planted by the attacker's job ran"
    job_dir = Path(env.jobs(2)[0]["job_dir"])
    assert (job_dir / "VERSION").read_text() == "victim's own\n"
    for mirror in _mirrors(env):
        config = (mirror / "config").read_text()
        assert "evil" not in config, config
        assert not (mirror / "info").exists()
        assert not (mirror / "hooks").exists()
