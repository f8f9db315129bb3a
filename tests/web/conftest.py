"""The web page served the way `confidante run` serves it (bots/web/serve.py), over a real
LanceDB store, the real embedder and the tiny Llama, with Debian's Chromium driven through
Playwright. One server and one browser per module; each test opens its own browser context
(its own cookies), so people's sessions never mix.

The server runs on its own event loop in a thread: Playwright's sync API drives the browser
from the test's thread, and chat messages (`/web`, `/link`) go to the same assistant on the
server's loop, as a chat platform would send them.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.assistant import Assistant, open_store
from core.config import Settings
from core.memory.consolidate import Consolidator
from tests.helpers import dm, group, say

CHROMIUM = "/usr/bin/chromium"
SHOTS = os.environ.get("CONFIDANTE_WEB_SHOTS")  # a folder: the tests save screenshots there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The assistant and its web page on a loop in a thread, and a chat to talk to it."""

    def __init__(self, assistant: Assistant, settings: Settings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.store = assistant.store
        self.base = settings.web_base_url
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port: int | None = None

    def start(self) -> None:
        from bots.web.serve import serve_web
        from workers import training

        async def main() -> None:
            self._stop = asyncio.Event()
            async with serve_web(self.assistant, self.settings, training) as port:
                self.port = port
                self._ready.set()
                await self._stop.wait()

        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(main(), self.loop)
        assert self._ready.wait(30), "the web page did not start"
        assert self.port == self.settings.web_port

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._main.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def say(self, text: str, person: str, platform: str = "telegram", **kw: Any) -> str:
        """A direct message from `person` on `platform`, answered by the assistant."""
        msg = dm(text, person=person, platform=platform, **kw)
        return asyncio.run_coroutine_threadsafe(say(self.assistant, msg), self.loop).result(60) or ""

    def say_in_group(self, text: str, person: str, chat_id: str = "-100") -> str:
        msg = group(text, person, chat_id=chat_id)
        return asyncio.run_coroutine_threadsafe(say(self.assistant, msg), self.loop).result(60) or ""

    def link_for(self, person: str, platform: str = "telegram") -> str:
        """The sign-in link `/web` sends this person (as a full URL)."""
        reply = self.say("/web", person, platform)
        match = re.search(r"(http://\S+/signin/[0-9a-f]+)", reply)
        assert match, reply
        return match.group(1)

    def consolidate(self, person: str, platform: str = "telegram") -> None:
        self.store.settle()
        person_id = self.store.person_for(platform, person)
        Consolidator(self.store).run(person_id)

    def person_id(self, person: str, platform: str = "telegram") -> str:
        return self.store.person_for(platform, person)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Iterator[Server]:
    from core.llm.engine import Engine

    data = tmp_path_factory.mktemp("web") / "data"
    settings = Settings(
        data_dir=data,
        max_new_tokens=4,
        temperature=0.0,
        ops_port=0,
        web_port=free_port(),
        rate_burst_person=1000,  # one person signs in and talks in every test of the module
        _env_file=None,
    )
    store = open_store(settings)
    assistant = Assistant(settings, store, Engine(tiny_model, settings))
    srv = Server(assistant, settings)
    srv.start()
    yield srv
    srv.stop()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "infra/test-services.sh installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    """Pages in fresh contexts (no shared cookies), phone- or desktop-sized."""
    contexts = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, is_mobile=width < 500
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(server: Server, page: Any, person: str, platform: str = "telegram") -> None:
    page.goto(server.link_for(person, platform))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.base}/")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
