"""The sign-in link and session rules, over plain HTTP against the served page: expired and
replayed links, CSRF and cross-site forms refused, cookie flags, `/web` refused in groups, and
the link's token never in a log line."""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest
import structlog

from bots.web.app import make_app
from bots.web.sessions import Sessions
from core.signin import Account, SignInLinks
from tests.web.conftest import Server
from workers import training

pytestmark = pytest.mark.timeout(120)


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def signed_in(server: Server, person: str) -> tuple[httpx.Client, str]:
    """A client with a session cookie, and the session's CSRF token read from the page."""
    client = httpx.Client(base_url=server.base, follow_redirects=False)
    token = token_of(server.link_for(person))
    response = client.post("/signin", data={"token": token})
    assert response.status_code == 303
    page = client.get("/").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client, csrf


def test_link_only_in_direct_chats_and_its_token_is_never_logged(server):
    reply = server.say_in_group("/web", "gil")
    assert "direct chat" in reply and "/signin/" not in reply
    with structlog.testing.capture_logs() as logs:
        link = server.link_for("gil")
        with httpx.Client(base_url=server.base) as client:
            assert client.get(link).status_code == 200  # a chat app's link preview: no sign-in
            assert client.post("/signin", data={"token": token_of(link)}).status_code == 303
    assert logs and token_of(link) not in repr(logs)
    assert any(e["event"] == "web sign-in" for e in logs)


def test_a_link_works_once(server):
    link = server.link_for("hal")
    with httpx.Client(base_url=server.base) as first, httpx.Client(base_url=server.base) as second:
        assert "Sign in" in first.get(link).text
        assert (
            first.post("/signin", data={"token": token_of(link)}, follow_redirects=False).status_code == 303
        )
        replay = second.post("/signin", data={"token": token_of(link)}, follow_redirects=False)
        assert replay.status_code == 410 and "set-cookie" not in replay.headers
        assert "no longer works" in second.get(link).text
        assert second.get("/", follow_redirects=False).status_code == 401


def test_asking_again_voids_the_earlier_link(server):
    old, new = server.link_for("hal"), server.link_for("hal")
    with httpx.Client(base_url=server.base) as client:
        assert client.post("/signin", data={"token": token_of(old)}).status_code == 410
        assert (
            client.post("/signin", data={"token": token_of(new)}, follow_redirects=False).status_code == 303
        )


def test_an_expired_link_is_refused(server):
    links = server.assistant.commands.signin
    link = server.link_for("ivy")
    real_clock = links.clock
    links.clock = lambda: real_clock() + server.settings.web_link_seconds + 1
    try:
        with httpx.Client(base_url=server.base) as client:
            assert client.get(link).status_code == 410
            response = client.post("/signin", data={"token": token_of(link)}, follow_redirects=False)
            assert response.status_code == 410 and "set-cookie" not in response.headers
    finally:
        links.clock = real_clock
    with httpx.Client(base_url=server.base) as client:  # used up by the attempt, even late
        assert client.post("/signin", data={"token": token_of(link)}).status_code == 410


@pytest.mark.parametrize("token", ["", "0" * 48, "../../etc/passwd", "x" * 5000])
def test_made_up_tokens_are_refused(server, token):
    with httpx.Client(base_url=server.base) as client:
        assert client.post("/signin", data={"token": token}).status_code == 410


def test_cookie_flags_and_headers(server):
    link = server.link_for("jo")
    with httpx.Client(base_url=server.base) as client:
        response = client.post("/signin", data={"token": token_of(link)}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("confidante_session=")
    flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"] == "SameSite=Lax" and flags["path"] == "Path=/"
    assert "secure" not in flags  # plain http on 127.0.0.1
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"


async def test_behind_tls_the_cookie_is_secure_and_host_only(server):
    from aiohttp.test_utils import TestClient, TestServer

    settings = server.settings.model_copy(update={"web_public_url": "https://me.example.org/"})
    links = SignInLinks()
    app = make_app(server.assistant, settings, training, links)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/signin", data={"token": links.issue("telegram", "jo")}, allow_redirects=False
        )
        cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-confidante_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert settings.web_base_url == "https://me.example.org"


def test_changes_need_the_sessions_csrf_token(server):
    server.say("I live in Tromso.", "kim")
    server.consolidate("kim")
    kim = server.person_id("kim")
    [home] = server.store.memories_of(kim)
    client, csrf = signed_in(server, "kim")
    other, other_csrf = signed_in(server, "lee")
    with contextlib.closing(client), contextlib.closing(other):
        for form in (
            {"memory": home.id},
            {"memory": home.id, "csrf": "wrong"},
            {"memory": home.id, "csrf": other_csrf},
        ):
            response = client.post("/forget", data=form)
            assert response.status_code == 403 and "did not come from your page" in response.text
        response = client.post("/pause", data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert response.status_code == 403
        assert client.post("/forget-me", data={"confirm": "yes"}).status_code == 403
        assert server.store.memories_of(kim) == [home] and not server.store.person(kim).settings.paused
        response = client.post("/forget", data={"memory": home.id, "csrf": csrf})
        assert response.status_code == 303
        assert server.store.memories_of(kim) == []


def test_signing_out_ends_the_session(server):
    client, csrf = signed_in(server, "max")
    with contextlib.closing(client):
        cookie = dict(client.cookies)
        assert client.post("/signout", data={"csrf": csrf}).status_code == 303
        again = httpx.get(f"{server.base}/", cookies=cookie)  # the old cookie, replayed
        assert again.status_code == 401


def test_the_web_page_can_be_turned_off(server):
    settings = server.settings
    server.assistant.commands.settings = settings.model_copy(update={"web_port": 0})
    try:
        assert "turned off" in server.say("/web", "ned")
    finally:
        server.assistant.commands.settings = settings


def test_sessions_expire():
    now = [1000.0]
    sessions = Sessions(ttl_seconds=60, clock=lambda: now[0])
    sid, session = sessions.start(Account("telegram", "oz"))
    assert sessions.get(sid) is session and sessions.get(sid + "x") is None
    now[0] += 61
    assert sessions.get(sid) is None


def test_only_current_memories_of_ones_own_can_be_corrected(server):
    server.say("I live in Bergen.", "pia")
    server.consolidate("pia")
    server.say("I moved to Narvik.", "pia")
    server.consolidate("pia")
    pia = server.person_id("pia")
    old = next(m for m in server.store.memories_of(pia, current_only=False) if not m.current)
    [now] = server.store.memories_of(pia)
    client, csrf = signed_in(server, "pia")
    with contextlib.closing(client):
        assert client.get(f"/memories/{old.id}/edit").status_code == 404  # history is not edited
        assert client.post(f"/memories/{old.id}/edit", data={"csrf": csrf, "text": "x"}).status_code == 404
        too_long = "Lives in " + "a" * 600
        response = client.post(f"/memories/{now.id}/edit", data={"csrf": csrf, "text": too_long})
        assert response.status_code == 400 and "a memory holds up to 500" in response.text
        assert too_long in response.text  # what they wrote comes back, nothing lost
        assert server.store.memories_of(pia) == [now]
        for crafted in ("' OR '1'='1", "x" * 600, "%00"):
            assert client.get(f"/memories/{crafted}/edit").status_code == 404
