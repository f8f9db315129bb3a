"""Helpers for the Matrix tests: the Synapse harness, nio clients as the people, a scripted core.

Synapse runs from its own venv (infra/synapse/setup.sh installs it on first use, ~35 s once).
Each test registers fresh users, so tests share the server without seeing each other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, RoomCreateResponse, RoomSendResponse, SyncResponse

from bots.matrix import MatrixBot
from bots.settings import ChannelSettings

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "synapse_homeserver", ROOT / "infra" / "synapse" / "homeserver.py"
)
assert _spec and _spec.loader
homeserver_mod = importlib.util.module_from_spec(_spec)
sys.modules["synapse_homeserver"] = homeserver_mod
_spec.loader.exec_module(homeserver_mod)
Homeserver = homeserver_mod.Homeserver
Registered = homeserver_mod.Registered
remove = homeserver_mod.remove


def unique(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:8]}"


class Person:
    """A Matrix user driven by a real nio client; collects every timeline event it syncs."""

    def __init__(self, hs: Any, account: Any, store: Path | None = None) -> None:
        self.hs = hs
        self.account = account
        self.user_id: str = account.user_id
        encrypted = store is not None
        if store:
            store.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            hs.url,
            account.user_id,
            store_path=str(store) if store else "",
            config=AsyncClientConfig(encryption_enabled=encrypted, store_sync_tokens=False),
        )
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.events: list[tuple[str, Any]] = []  # (room_id, nio event)
        self.ephemeral: list[tuple[str, Any]] = []  # typing notices, receipts

    async def setup(self) -> None:
        if self.client.olm and self.client.should_upload_keys:
            await self.client.keys_upload()
        await self.sync(0)

    async def sync(self, timeout_ms: int = 500) -> None:
        resp = await self.client.sync(timeout=timeout_ms)
        assert isinstance(resp, SyncResponse), resp
        for room_id, info in resp.rooms.join.items():
            for event in info.timeline.events:
                self.events.append((room_id, event))
            for event in info.ephemeral:
                self.ephemeral.append((room_id, event))
        if self.client.olm:
            await self.client.send_to_device_messages()
            if self.client.should_upload_keys:
                await self.client.keys_upload()
            if self.client.should_query_keys:
                await self.client.keys_query()
            if self.client.should_claim_keys:
                await self.client.keys_claim(self.client.get_users_for_key_claiming())

    async def wait_for(
        self, pred: Callable[[str, Any], bool], timeout: float = 30, what: str = "event"
    ) -> Any:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for room_id, event in self.events[seen:]:
                if pred(room_id, event):
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user_id} saw no {what} within {timeout}s")
            await self.sync(500)

    async def no_event(self, pred: Callable[[str, Any], bool], seconds: float) -> None:
        start = len(self.events)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.sync(300)
        bad = [e for r, e in self.events[start:] if pred(r, e)]
        assert not bad, f"unexpected events: {[e.source for e in bad]}"

    def from_user(self, user_id: str, room_id: str) -> list[Any]:
        return [e for r, e in self.events if r == room_id and getattr(e, "sender", None) == user_id]

    async def create_room(
        self, invite: list[str], *, direct: bool = False, encrypted: bool = False, name: str | None = None
    ) -> str:
        initial_state = []
        if encrypted:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        resp = await self.client.room_create(
            invite=invite, is_direct=direct, initial_state=initial_state, name=name
        )
        assert isinstance(resp, RoomCreateResponse), resp
        return resp.room_id

    async def say(self, room_id: str, text: str, **extra: Any) -> str:
        content = {"msgtype": "m.text", "body": text, **extra}
        if room_id not in self.client.rooms:
            await self.sync(0)
        resp = await self.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        assert isinstance(resp, RoomSendResponse), resp
        return resp.event_id


def content(event: Any) -> dict[str, Any]:
    return event.source.get("content", {})


def is_edit(event: Any) -> bool:
    return (content(event).get("m.relates_to") or {}).get("rel_type") == "m.replace"


def final_text(person: Person, room_id: str, bot_id: str, message_id: str) -> str:
    """What a client shows for a bot message: the latest edit's m.new_content, else the original."""
    text = None
    for event in person.from_user(bot_id, room_id):
        c = content(event)
        if event.event_id == message_id:
            text = text or c.get("body")
        elif (c.get("m.relates_to") or {}).get("event_id") == message_id and is_edit(event):
            text = c["m.new_content"]["body"]
    assert text is not None
    return text


def bot_settings(
    hs: Any, account: Any, data_dir: Path, *, matrix: dict[str, Any] | None = None, **extra: Any
) -> ChannelSettings:
    """Settings for a bot on the test Synapse; `matrix` changes fields of its section."""
    section: dict[str, Any] = {
        "homeserver": hs.url,
        "user_id": account.user_id,
        "password": account.password,
        "edit_interval_seconds": 0.3,
        "backoff_max_seconds": 1.0,
        "sync_timeout_ms": 1000,
        **(matrix or {}),
    }
    return ChannelSettings(data_dir=data_dir, matrix=section, **extra)


async def start_bot(assistant: Any, settings: ChannelSettings, registry: list[MatrixBot]) -> MatrixBot:
    bot = MatrixBot(assistant, settings)
    registry.append(bot)
    await asyncio.wait_for(bot.start(), 60)
    return bot


class Proxy:
    """A TCP relay between the bot and Synapse that a test can cut, to play a homeserver outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        await self.cut()
