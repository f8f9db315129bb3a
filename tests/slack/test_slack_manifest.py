"""The shipped app manifest matches what the app asks for and handles."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bots.slack import SlackBot
from bots.slack_oauth import BOT_SCOPES
from tests.channel_fakes import ScriptedAssistant
from tests.slack.slack_support import ANSWER, event_body, post_signed, slack_settings

MANIFEST = Path(__file__).resolve().parents[2] / "infra" / "slack-manifest.yaml"


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_scopes_and_command_match_the_app():
    m = manifest()
    assert sorted(m["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)
    (command,) = m["features"]["slash_commands"]
    assert command["command"] == "/confidante"
    assert m["features"]["app_home"]["home_tab_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is True
    for url in (command["url"], m["settings"]["event_subscriptions"]["request_url"]):
        assert url.endswith("/slack/events")
    assert m["oauth_config"]["redirect_urls"][0].endswith("/slack/oauth_redirect")


@pytest.fixture
async def http_bot(tmp_path, fake_slack):
    bot = SlackBot(
        ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0),
        slack_settings(tmp_path, fake_slack),
    )
    await bot.start()
    yield bot, f"{bot.endpoints.http_url}/slack/events"
    await bot.stop()


async def test_every_subscribed_event_has_a_listener(http_bot):
    bot, url = http_bot
    for i, name in enumerate(manifest()["settings"]["event_subscriptions"]["bot_events"]):
        etype = name.split(".")[0]
        event = {
            "type": etype,
            "event_ts": f"1.{i}",
            "channel": "C1",
            "user": "U1",
            "ts": f"1.{i}",
            "text": "x",
        }
        if name.startswith("assistant_thread"):
            event = {
                "type": etype,
                "event_ts": f"1.{i}",
                "assistant_thread": {
                    "user_id": "U1",
                    "context": {"channel_id": "C1", "team_id": "T111", "enterprise_id": None},
                    "channel_id": "D1",
                    "thread_ts": f"1.{i}",
                },
            }
        if name == "tokens_revoked":
            event["tokens"] = {"bot": ["UBOT111"]}
        status, text, _ = await post_signed(url, event_body(event, event_id=f"EvM{i}"))
        assert status == 200, (name, status, text)  # bolt answers 404 to an event nobody listens to
    await bot.drain()
