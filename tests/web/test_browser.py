"""The dashboard in a real browser: Playwright driving Debian's Chromium (headless).

A real `layerbot serve` (local backend, real git) with a fake GitHub and a fake GitHub
OAuth server. A person logs in, opens the overview, redoes a failed job at the PR's new
head and watches it move through its states, then pauses the instance; the PR is told.
Screenshots go to test-artifacts/browser/. Without Chromium the test is skipped on a
developer's machine and FAILS under CI (CI set), where scripts/test.sh installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.botproc import SECRET, BotProcess, free_port, write_config
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.fakeoauth import FakeOAuth
from tests.support.origin import Origin
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    encode,
    issue_comment_created,
)

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
OWNER, NAME = DEFAULT_REPO.split("/")

FAILING = """#!/usr/bin/env bash
echo "compiling hello"
echo "error: hello.c:3: expected ';'" >&2
exit 1
"""
FIXED = """#!/usr/bin/env bash
for step in configure compile install; do echo "$step"; sleep 0.7; done
echo '{"status": "success", "summary": "hello built", "artifacts": []}' > result.json
"""

pytestmark = pytest.mark.slow


def _need_chromium() -> None:
    if os.path.exists(CHROMIUM) and shutil.which("git"):
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; under CI the browser test must run")
    pytest.skip(message)


class Env:
    def __init__(self, fake: FakeGitHub, oauth: FakeOAuth, origin: Origin,
                 bot: BotProcess) -> None:
        self.fake, self.oauth, self.origin, self.bot = fake, oauth, origin, bot

    def comment(self, number: int, body: str, login: str = "alice") -> None:
        comment_id = self.fake.add_comment(OWNER, NAME, number, body, login=login)
        payload = encode(issue_comment_created(body, login, pr_number=number,
                                               comment_id=comment_id))
        response = httpx.post(self.bot.url + "/webhook", content=payload, timeout=10,
                              headers=delivery_headers("issue_comment", payload, SECRET))
        assert response.status_code == 202

    def replies(self, number: int) -> list[Any]:
        return [c for c in self.fake.comments(OWNER, NAME, number) if c.user == "layerbot[bot]"]

    def jobs(self, number: int) -> list[dict[str, Any]]:
        answer = httpx.get(self.bot.url + "/api/jobs", params={"pr": number}, timeout=10)
        return list(answer.json()["jobs"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    _need_chromium()
    tmp = tmp_path_factory.mktemp("browser")
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    oauth = FakeOAuth(login="alice").start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    (tmp / "bot").mkdir()
    (tmp / "bot" / "oauth-secret").write_text(oauth.client_secret)
    port = free_port()
    config = write_config(tmp / "bot", api_url=fake.url, app_id=DEFAULT_APP_ID,
                          private_key_pem=private, port=port, extra={
                              "build": {"clone_url": str(tmp / "origin" / "{repo}")},
                              "backend": {"poll_seconds": 0.3},
                              "access": {"pause": ["role:write"]},
                              "github": {"repositories": [DEFAULT_REPO]},
                              "web": {**oauth.web_config(), "base_url": f"http://127.0.0.1:{port}",
                                      "oauth_client_secret_file": "oauth-secret"},
                              "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}],
                              "repo_targets": [{"id": "eessi-2023.06"}]})
    bot = BotProcess(config, port).start()
    try:
        yield Env(fake, oauth, origin, bot)
    finally:
        bot.stop()
        oauth.stop()
        fake.stop()


def test_log_in_redo_a_failed_job_and_pause_the_instance(env: Env) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    head = env.origin.open_pr(1, files={"bot/build.sh": FAILING})
    env.fake.add_pull(OWNER, NAME, 1, head_sha=head)
    env.comment(1, "bot: build")
    failed = env.fake.wait_for(
        lambda: next((j for j in env.jobs(1) if j["state"] == "failed"), None), timeout=60,
        message="the first build did not fail")
    fixed = env.origin.push_pr(1, {"bot/build.sh": FIXED})
    env.fake.update_pull(OWNER, NAME, 1, head_sha=fixed)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(env.bot.url + "/")
            expect(page.locator("h1")).to_have_text("Overview")
            page.click("#login-link")  # → the fake GitHub consent → back, logged in
            expect(page.locator("#login")).to_have_text("@alice")
            assert env.oauth.authorizations == 1
            failures = page.locator("section", has_text="Failures of the last 24 hours")
            expect(failures.locator(f"a[href='/jobs/{failed['id']}']")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

            failures.locator(f"a[href='/jobs/{failed['id']}']").click()
            expect(page.locator("#state")).to_contain_text("failed")
            expect(page.locator("#log")).to_contain_text("expected ';'")
            page.click("#redo-head")
            expect(page.locator(".flash")).to_contain_text(f"job {failed['id']} redone")
            new_id = int(page.url.rsplit("/", 1)[1])
            assert new_id != failed["id"]
            seen: list[str] = []

            def state_now() -> str:
                text = page.locator("#state").inner_text().strip()
                if not seen or seen[-1] != text:
                    seen.append(text)
                return text

            deadline_ms = 60_000
            waited = 0
            while state_now() != "succeeded" and waited < deadline_ms:
                page.wait_for_timeout(150)
                waited += 150
            page.screenshot(path=str(ARTIFACTS / "job-redone.png"), full_page=True)
            assert seen[-1] == "succeeded", seen
            assert len(seen) >= 2, f"the page did not follow the job's states: {seen}"
            expect(page.locator("#log")).to_contain_text("install")
            history = page.locator(".history li").all_inner_texts()
            assert [h.split()[0] for h in history] == ["queued", "submitted", "running",
                                                       "succeeded"]
            assert env.jobs(1)[0]["head_sha"] == fixed  # newest first: the redo

            page.goto(env.bot.url + "/")
            card = page.locator(".card").first
            card.locator("button.pause-toggle").click()
            expect(page.locator(".flash")).to_contain_text("paused")
            expect(page.locator(".card").first).to_contain_text("paused")
            expect(page.locator(".card").first.locator("button.pause-toggle")).to_have_text(
                "Resume")
            page.screenshot(path=str(ARTIFACTS / "paused.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844},
                                     is_mobile=True, has_touch=True)
            phone.goto(env.bot.url + "/")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the overview is wider than a phone ({width}px)"
            phone.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)
            phone.goto(env.bot.url + f"/jobs/{new_id}")
            phone.screenshot(path=str(ARTIFACTS / "job-phone.png"), full_page=True)
        finally:
            browser.close()

    # Paused: a new build is recorded but not submitted, and the PR is told so.
    env.comment(1, "bot: build")
    reply = env.fake.wait_for(
        lambda: next((c for c in env.replies(1) if "instance is paused" in c.body), None),
        timeout=30, message="the PR was not told that the instance is paused")
    assert "submitted when it is resumed" in reply.body
    assert env.jobs(1)[0]["state"] == "queued"
