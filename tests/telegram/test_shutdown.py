"""Shutdown under load: SIGTERM while replies stream. `confidante run` stops taking updates,
lets the replies in progress finish within the grace period and exits; replies that the grace
period cuts stay unanswered in the inbox and the next start answers each of them once."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.crash_checks import inbox_states, until
from tests.crash_runner import kill_group, spawn
from tests.telegram.fake_bot_api import FakeBotAPI, group_chat, message, private_chat, user
from tests.telegram.test_crash import MENTION, answers, env

PEOPLE = [user(500 + i, f"Busy{i}") for i in range(6)]
GROUP = group_chat(-100950, "Slow club")


async def stop(proc) -> float:
    """SIGTERM, as a service manager sends it; returns the seconds until the process exited."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    return time.monotonic() - start


async def test_sigterm_under_load_finishes_what_it_can_in_the_grace_period_and_loses_nothing(
    fake_api: FakeBotAPI, tmp_path
):
    data, log = tmp_path / "data", tmp_path / "run.log"
    grace = 5.0
    sent: dict[int, dict] = {}

    async def ask(chat: dict, who: dict, text: str, **kw) -> None:
        update = await fake_api.push({"message": message(chat, who, text, **kw)})
        sent[update["update_id"]] = update["message"]

    def states() -> list[str | None]:
        found = inbox_states(data)
        return [found.get(("telegram", str(m["chat"]["id"]), str(m["message_id"]))) for m in sent.values()]

    proc = spawn({**env(fake_api, data), "CONFIDANTE_SHUTDOWN_GRACE_SECONDS": str(grace)}, str(log))
    try:
        await fake_api.wait_for(lambda: fake_api.of("getUpdates"), timeout=120)
        for i, person in enumerate(PEOPLE):  # six direct chats: streaming side by side
            await ask(private_chat(person), person, f"Question {i}?")
        for i, person in enumerate(PEOPLE[:3]):  # one group: one reply after another
            await ask(GROUP, person, f"{MENTION} slow question {i}?", mention=MENTION)
        await fake_api.wait_for(lambda: len(fake_api.of("sendMessageDraft")) >= 6, timeout=60)
        at_signal = states()
        assert None not in at_signal and at_signal.count("answered") < len(sent)
        took = await stop(proc)
        polls_at_exit = len(fake_api.of("getUpdates"))
        at_exit = states()
        await asyncio.sleep(1.0)
        assert len(fake_api.of("getUpdates")) == polls_at_exit  # it takes no more updates

        polls = len(fake_api.of("getUpdates"))
        proc = spawn(env(fake_api, data), str(log))
        await fake_api.wait_for(lambda: len(fake_api.of("getUpdates")) > polls, timeout=120)  # serving
        await until(lambda: states() == ["answered"] * len(sent), 120)
        await asyncio.sleep(1.0)  # a duplicate would show up here
        await stop(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    finished = at_exit.count("answered") - at_signal.count("answered")
    print(
        f"\nshutdown under load, grace {grace:.0f} s: {len(sent)} messages, {at_signal.count('answered')} "
        f"answered at SIGTERM, {finished} finished in the grace period, {len(sent) - at_exit.count('answered')} "
        f"cut and answered after the restart; exited {took:.1f} s after SIGTERM"
    )
    assert finished > 0  # replies in progress were let finish...
    assert took < grace + 6  # ...but no longer than the grace period (plus closing the store and worker)
    assert all(len(texts) == 1 for texts in answers(fake_api, sent).values())  # nothing lost or doubled
