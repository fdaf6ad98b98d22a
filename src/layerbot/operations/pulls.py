"""A pull request's head as GitHub answers it now: what a build, redo or deploy pins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from layerbot.config import Config


class GitHubReader(Protocol):
    """The one GitHub call reading a PR needs (``github.client.GitHubApp`` is one)."""

    async def json(self, installation_id: int, method: str, url: str,
                   **kwargs: Any) -> Any: ...


class PullUnavailable(Exception):
    """The PR cannot be read: no GitHub App configured, or the event names no installation."""


@dataclass(frozen=True)
class PullHead:
    number: int
    sha: str
    base_ref: str
    clone_url: str
    state: str
    labels: tuple[str, ...] = ()


def parse_pull(config: Config, repo: str, number: int, data: dict[str, Any]) -> PullHead:
    """The PR as ``GET /repos/{repo}/pulls/{n}`` answers; ``build.clone_url`` overrides
    where it is cloned from (a mirror or a local origin)."""
    clone_url = str(data["base"]["repo"]["clone_url"])
    if config.build.clone_url:
        clone_url = config.build.clone_url.format(repo=repo)
    return PullHead(number=number, sha=str(data["head"]["sha"]),
                    base_ref=str(data["base"]["ref"]), clone_url=clone_url,
                    state=str(data["state"]),
                    labels=tuple(str(label.get("name", "")) for label in data.get("labels") or ()
                                 if isinstance(label, dict)))


async def fetch_pull(github: GitHubReader | None, config: Config, repo: str, number: int,
                     installation_id: int | None) -> PullHead:
    """The PR's head now (GitHub's errors pass through to the caller)."""
    if github is None:
        raise PullUnavailable("this instance has no GitHub App configured, so it cannot "
                              "look up the pull request's head")
    if installation_id is None:
        raise PullUnavailable(f"no installation of the GitHub App is known for {repo}")
    data = await github.json(installation_id, "GET", f"/repos/{repo}/pulls/{number}")
    return parse_pull(config, repo, number, data)
