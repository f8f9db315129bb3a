"""What bots/channel.py gives every channel, checked without a platform: the registry `run`
reads, the edit loop's pacing, the apology, and the core's /context rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from bots.channel import SORRY, Throttle, answer, build_channels, stream_edits
from bots.settings import ChannelSettings
from core import chat_admin
from core.messages import Reply
from tests.channel_fakes import ScriptedAssistant
from tests.helpers import dm, group


def test_the_registry_starts_only_configured_platforms() -> None:
    assert build_channels(ChannelSettings(_env_file=None)) == {}
    runners = build_channels(
        ChannelSettings(telegram={"bot_token": "1:x"}, matrix={"homeserver": "http://h", "user_id": "@b:h"})
    )
    assert sorted(runners) == ["matrix", "telegram"]
    assert runners["telegram"].__name__ == "run_telegram"


async def test_edits_are_paced_while_the_stream_is_read_at_its_own_speed() -> None:
    shown: list[tuple[str, bool, float]] = []

    async def deltas() -> AsyncIterator[str]:
        for i in range(30):
            await asyncio.sleep(0.01)
            yield f"w{i} "

    async def show(text: str, final: bool) -> None:
        shown.append((text, final, time.monotonic()))
        await asyncio.sleep(0.05)  # a slow platform: the stream must not wait for it

    text = await stream_edits(deltas(), show, Throttle(0.1), "chat")
    assert text == "".join(f"w{i} " for i in range(30))
    assert shown[-1][:2] == (text, True) and not any(final for _, final, _ in shown[:-1])
    gaps = [b[2] - a[2] for a, b in zip(shown, shown[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # one edit per interval at most
    assert len(shown) < 30, "edits were batched, not one per delta"


async def test_a_failed_delivery_gets_the_apology_and_the_stream_is_finished() -> None:
    apologies: list[str] = []

    async def deliver(reply: Reply) -> None:
        raise RuntimeError("the platform refused")

    assistant = ScriptedAssistant(delay=0.0)
    await answer(assistant, dm("hi"), deliver, _record(apologies), platform="console")
    assert apologies == [SORRY]
    assert assistant.consumed.is_set(), "the core's stream was read out, so its turn is recorded"


def _record(into: list[str]):
    async def say(text: str) -> None:
        into.append(text)

    return say


def test_only_group_admins_change_group_context() -> None:
    assert chat_admin.needs_admin(group("/context off", "bob"))
    assert not chat_admin.needs_admin(group("/context", "bob"))  # asking is fine
    assert not chat_admin.needs_admin(dm("/context off"))
    assert not chat_admin.may_change(group("/context off", "bob"))  # the channel did not say
    assert not chat_admin.may_change(group("/context on", "bob", sender_admin=False))
    assert chat_admin.may_change(group("/context on", "ann", sender_admin=True))
