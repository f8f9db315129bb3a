"""Slack audio clips and images through signed HTTP events: the file is fetched from the local
Slack's url_private_download with the bot token, read, answered by the real Assistant and recalled."""

from __future__ import annotations

import asyncio

import pytest

from bots.slack import SlackBot
from core.assistant import build_assistant
from tests.media.assistant_fixture import media_bytes_in
from tests.slack.slack_support import TOKEN, dm_event, event_body, post_signed, slack_settings

_n = iter(range(1, 10**6))


def _ts() -> str:
    n = next(_n)
    return f"1700200{n:03d}.{n:06d}"


@pytest.fixture
async def real_bot(tmp_path, fake_slack, make_engine):
    engine = make_engine()
    settings = slack_settings(tmp_path, fake_slack, max_new_tokens=8)
    assistant = build_assistant(settings, engine=engine)
    bot = SlackBot(assistant, settings)
    await bot.start()
    yield bot, engine, f"{bot.endpoints.http_url}/slack/events", settings
    await bot.stop()
    assistant.close()


async def _send(url: str, event: dict) -> None:
    status, _, _ = await post_signed(url, event_body(event, event_id=f"Ev{_ts()}"))
    assert status == 200


async def test_audio_clip_and_image_are_read_answered_and_recalled(
    real_bot,
    fake_slack,
    sister_note: bytes,
    receipt_png: bytes,
):
    bot, engine, url, settings = real_bot
    clip = fake_slack.share_file(
        TOKEN, "F1", "audio_message.ogg", "audio/ogg", sister_note, subtype="slack_audio", duration_ms=3000
    )
    await _send(url, dm_event("", ts=_ts(), subtype="file_share", files=[clip]))
    await fake_slack.wait_for(lambda: engine.finished >= 1, timeout=90)
    await bot.drain()
    assert "(voice note)" in engine.prompt_text(-1) and "Norway" in engine.prompt_text(-1)
    image = fake_slack.share_file(TOKEN, "F2", "receipt.png", "image/png", receipt_png)
    await _send(url, dm_event("the receipt", ts=_ts(), subtype="file_share", files=[image]))
    await fake_slack.wait_for(lambda: engine.finished >= 2, timeout=90)
    await bot.drain()
    await _send(url, dm_event("What was the invoice number and where does my sister live?", ts=_ts()))
    await fake_slack.wait_for(lambda: engine.finished >= 3, timeout=90)
    await bot.drain()
    prompt = engine.prompt_text(-1)
    assert "4721" in prompt and "Norway" in prompt
    downloads = fake_slack.calls_to("files.download")
    assert [c.token for c in downloads] == [TOKEN, TOKEN], "fetched with the workspace's bot token"
    assert media_bytes_in(settings.data_dir, sister_note, receipt_png) == []


async def test_a_file_slack_refuses_gets_a_clear_reply(real_bot, fake_slack, sister_note: bytes):
    bot, engine, url, _ = real_bot
    clip = fake_slack.share_file(TOKEN, "F9", "a.ogg", "audio/ogg", sister_note, subtype="slack_audio")
    fake_slack.private_files["F9"] = ("xoxb-other-workspace", sister_note)  # our token is refused
    await _send(url, dm_event("", ts=_ts(), subtype="file_share", files=[clip]))
    await fake_slack.wait_for(lambda: fake_slack.posted_in("D1"), timeout=30)
    await bot.drain()
    assert "files:read" in fake_slack.posted_in("D1")[0].text
    assert engine.finished == 0


async def test_a_slow_read_is_answered_with_what_was_read_not_from_the_caption(
    real_bot, fake_slack, receipt_png: bytes, monkeypatch
):
    """Reading takes seconds on a busy machine; meanwhile the inbox holds only the caption, and
    the recovery loop (which answers what nothing is answering) must leave it to the reader."""
    bot, engine, url, _ = real_bot
    read = bot.media.read

    async def slow_read(*args, **kwargs):
        await asyncio.sleep(4)  # longer than the recovery loop's wait for a message to be picked up
        return await read(*args, **kwargs)

    monkeypatch.setattr(bot.media, "read", slow_read)
    image = fake_slack.share_file(TOKEN, "F3", "receipt.png", "image/png", receipt_png)
    await _send(url, dm_event("the receipt", ts=_ts(), subtype="file_share", files=[image]))
    await fake_slack.wait_for(lambda: engine.finished >= 1, timeout=90)
    await bot.drain()
    await asyncio.sleep(1.5)  # a second answer from the caption would have started by now
    assert engine.finished == 1
    assert "4721" in engine.prompt_text(-1)
    assert len(fake_slack.posted_in("D1")) == 1
