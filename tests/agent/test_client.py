"""The agent's HTTP client: through the site's proxy, across replicas, and what it makes of
the server's answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from layerbot.agent.client import ControlPlane, Refused, ServerUnreachable
from layerbot.core.protocol import PROTOCOL_HEADER, ClaimRequest


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with an empty claim and remembers what it was asked."""

    seen: list[tuple[str, dict[str, str]]] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        type(self).seen.append((self.path, dict(self.headers)))
        body = json.dumps({"jobs": []} if self.status == 200 else {"detail": "too old"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"seen": [], "status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_requests_go_through_the_proxy_of_the_environment(
        server: tuple[str, type[Recorder]], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, seen = server
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = ControlPlane("http://control-plane.invalid", "lba_secret")
    assert client.claim(ClaimRequest(slots=1, wait_seconds=0)).jobs == []
    ((path, headers),) = seen.seen
    # A proxy is asked for the absolute URL: the request went through it.
    assert path == "http://control-plane.invalid/agent/v1/claim"
    assert headers["Authorization"] == "Bearer lba_secret"
    assert headers[PROTOCOL_HEADER] == "1"


def test_a_replica_that_does_not_answer_is_skipped(
        server: tuple[str, type[Recorder]], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url, seen = server
    client = ControlPlane(f"http://127.0.0.1:1,{url}", "lba_secret")
    assert client.claim(ClaimRequest(slots=1, wait_seconds=0)).jobs == []
    assert client.claim(ClaimRequest(slots=1, wait_seconds=0)).jobs == []  # stays there
    assert [p for p, _ in seen.seen] == ["/agent/v1/claim"] * 2
    with pytest.raises(ServerUnreachable):
        ControlPlane("http://127.0.0.1:1", "t").claim(ClaimRequest(slots=1))


def test_an_unsupported_protocol_is_a_refusal_not_an_outage(
        server: tuple[str, type[Recorder]], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url, seen = server
    seen.status = 426
    with pytest.raises(Refused, match="426: too old"):
        ControlPlane(url, "t").claim(ClaimRequest(slots=1, wait_seconds=0))
