"""The Slack channel with the real core: `build_assistant` with real LanceDB files and embeddings,
driven through signed HTTP events and the OAuth install flow against the local Slack stand-in."""

from __future__ import annotations

import json
import stat
from http.cookies import SimpleCookie

import aiohttp
import pytest
import structlog

from bots.slack import SlackBot
from bots.slack_render import escape, markdown_to_mrkdwn
from core.assistant import build_assistant
from tests.slack.slack_support import (
    TEAM,
    CountingEngine,
    dm_event,
    event_body,
    mention_event,
    post_signed,
    slack_settings,
)

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "client-secret-value"

_ids = iter(range(1, 10**6))


def _ts() -> str:
    n = next(_ids)
    return f"1700100{n:03d}.{n:06d}"


async def _say(url: str, fake, engine: CountingEngine, event: dict, team: str = TEAM) -> None:
    before = engine.finished
    status, _, _ = await post_signed(url, event_body(event, team=team, event_id=f"Ev{_ts()}"))
    assert status == 200
    await fake.wait_for(lambda: engine.finished > before, timeout=60)


@pytest.fixture
async def real_bot(tmp_path, fake_slack, make_engine):
    engine = make_engine()
    settings = slack_settings(tmp_path, fake_slack, max_new_tokens=8)
    assistant = build_assistant(settings, engine=engine)
    bot = SlackBot(assistant, settings)
    await bot.start()
    yield bot, engine, f"{bot.endpoints.http_url}/slack/events"
    await bot.stop()


async def test_dm_conversation_remembers_what_was_said(real_bot, fake_slack):
    bot, engine, url = real_bot
    await _say(url, fake_slack, engine, dm_event("My dog is called Biscuit.", ts=_ts()))
    await bot.drain()
    await _say(url, fake_slack, engine, dm_event("What is my dog called?", ts=_ts()))
    await bot.drain()
    assert "Biscuit" in engine.prompt_text(-1)
    replies = fake_slack.posted_in("D1")
    assert replies[0].text == (markdown_to_mrkdwn(engine.outputs[0].strip()) or " ")
    # a question about the person opens with what they told (core/grounding.py), the model adds to it
    assert replies[1].text.startswith("You told me your dog is called Biscuit.")
    assert len(replies) == 2


async def test_app_mention_answered_in_its_thread_and_thread_followups_too(real_bot, fake_slack):
    bot, engine, url = real_bot
    root = _ts()
    await _say(url, fake_slack, engine, mention_event("hello there", ts=root))
    await bot.drain()
    follow = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": "and one more thing",
        "ts": _ts(),
        "thread_ts": root,
        "channel_type": "channel",
    }
    await _say(url, fake_slack, engine, follow)
    await bot.drain()
    streams = fake_slack.calls_to("chat.startStream")
    assert [c.args["thread_ts"] for c in streams] == [root, root]
    assert "hello there" in engine.prompt_text(-1)  # the thread's earlier turn is context


async def test_private_dm_fact_never_reaches_a_channel_prompt(real_bot, fake_slack):
    bot, engine, url = real_bot
    await _say(url, fake_slack, engine, dm_event("My secret diagnosis is narcolepsy.", ts=_ts()))
    await bot.drain()
    await _say(url, fake_slack, engine, mention_event("what do you know about my health?", ts=_ts()))
    await bot.drain()
    channel_prompt = engine.prompt_text(-1)
    assert "health" in channel_prompt
    assert "narcolepsy" not in channel_prompt


async def test_export_uploads_a_json_file(real_bot, fake_slack):
    bot, engine, url = real_bot
    await _say(url, fake_slack, engine, dm_event("I live in Lisbon.", ts=_ts()))
    await bot.drain()
    await post_signed(url, event_body(dm_event("/export", ts=_ts()), event_id="EvExport"))
    await fake_slack.wait_for(lambda: fake_slack.calls_to("files.completeUploadExternal"), timeout=30)
    await bot.drain()
    (get_url,) = fake_slack.calls_to("files.getUploadURLExternal")
    assert get_url.args["filename"].endswith(".json")
    (complete,) = fake_slack.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "D1"
    (content,) = fake_slack.uploads.values()
    data = json.loads(content)
    assert any("Lisbon" in t["text"] for t in data["turns"])


async def test_slow_model_is_acked_first_and_streams_while_generating(tmp_path, fake_slack, make_engine):
    engine = make_engine(delay=0.5, max_new_tokens=8)
    settings = slack_settings(tmp_path, fake_slack)
    bot = SlackBot(build_assistant(settings, engine=engine), settings)
    await bot.start()
    try:
        url = f"{bot.endpoints.http_url}/slack/events"
        root = _ts()
        status, _, seconds = await post_signed(
            url, event_body(mention_event("take your time", ts=root), event_id="EvSlowReal")
        )
        assert status == 200 and seconds < 1.5
        assert engine.finished == 0
        first = await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.startStream"), timeout=30)
        assert engine.finished == 0  # text was shown before generation ended
        assert first[0].args.get("chunks") or first[0].args.get("markdown_text")
        await fake_slack.wait_for(lambda: engine.finished == 1, timeout=30)
        await bot.drain()
        (msg,) = fake_slack.posted_in("C1")
        assert msg.text.strip() == escape(engine.outputs[0]).strip()
        assert len(fake_slack.calls_to("chat.appendStream")) >= 1
    finally:
        await bot.stop()


async def test_app_home_lists_memories_and_forgets_one(real_bot, fake_slack):
    bot, engine, url = real_bot
    await _say(url, fake_slack, engine, dm_event("I am training for a marathon.", ts=_ts()))
    await bot.drain()
    home = {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home", "event_ts": _ts()}
    await post_signed(url, event_body(home, event_id="EvHome"))
    (published,) = await fake_slack.wait_for(lambda: fake_slack.calls_to("views.publish"))
    view = (
        json.loads(published.args["view"])
        if isinstance(published.args["view"], str)
        else published.args["view"]
    )
    assert published.args["user_id"] == "U1"
    items = [b for b in view["blocks"] if b.get("accessory", {}).get("value", "").startswith("/forget ")]
    assert items and "marathon" in items[0]["text"]["text"]
    press = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": "U1", "team_id": TEAM},
        "api_app_id": "A0TEST",
        "container": {"type": "view", "view_id": "V1"},
        "trigger_id": "1.2.3",
        "view": {"id": "V1", "type": "home"},
        "actions": [{**items[0]["accessory"], "block_id": "b1", "action_ts": "1700200000.1"}],
    }
    status, _, _ = await post_signed(
        url,
        "payload=" + __import__("urllib.parse").parse.quote(json.dumps(press)),
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 200
    await fake_slack.wait_for(lambda: len(fake_slack.calls_to("views.publish")) == 2, timeout=30)
    await bot.drain()
    republished = fake_slack.calls_to("views.publish")[-1]
    view = republished.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert "marathon" not in json.dumps(view)


# ---------------------------------------------------------------------------- multi-workspace


async def _install(bot_url: str, fake, *, team: str, token: str, user: str) -> aiohttp.ClientResponse:
    code = f"code-{team}"
    fake.grant_oauth_code(
        code,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token=token,
        team_id=team,
        team_name=f"Workspace {team}",
        bot_user_id=f"UBOT{team}",
        bot_id=f"B{team}",
        user_id=user,
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bot_url}/slack/install", allow_redirects=False) as resp:
            assert resp.status in (200, 302)
            cookie = SimpleCookie(resp.headers.get("Set-Cookie", ""))
            state = cookie["slack-app-oauth-state"].value
        # the state cookie is `Secure` (Slack apps sit behind https): send it as a browser would
        async with session.get(
            f"{bot_url}/slack/oauth_redirect?code={code}&state={state}",
            headers={"Cookie": f"slack-app-oauth-state={state}"},
        ) as resp:
            await resp.read()
            return resp


@pytest.fixture
async def multi_bot(tmp_path, fake_slack, make_engine):
    engine = make_engine()
    settings = slack_settings(
        tmp_path,
        fake_slack,
        slack={"bot_token": None, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    bot = SlackBot(build_assistant(settings, engine=engine), settings)
    await bot.start()
    yield bot, engine, settings
    await bot.stop()


async def test_oauth_install_stores_installations_privately_and_uninstall_removes_them(multi_bot, fake_slack):
    bot, engine, settings = multi_bot
    with structlog.testing.capture_logs() as logs:
        resp = await _install(
            bot.endpoints.http_url, fake_slack, team="TAAA", token="xoxb-aaa-secret", user="U1"
        )
    assert resp.status == 200
    (access,) = fake_slack.calls_to("oauth.v2.access")
    assert access.args["client_id"] == CLIENT_ID
    store_dir = settings.data_dir / "slack" / "installations"
    files = [p for p in store_dir.rglob("*") if p.is_file()]
    assert files and any("xoxb-aaa-secret" in p.read_text() for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert "xoxb-aaa-secret" not in str(logs)
    installation = await bot.installation_store.async_find_bot(enterprise_id=None, team_id="TAAA")
    assert installation is not None and installation.bot_token == "xoxb-aaa-secret"
    # a state that was never issued is refused
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bot.endpoints.http_url}/slack/oauth_redirect?code=code-TAAA&state=forged") as r,
    ):
        assert r.status >= 400
    url = f"{bot.endpoints.http_url}/slack/events"
    uninstall = {"type": "app_uninstalled", "event_ts": _ts()}
    status, _, _ = await post_signed(url, event_body(uninstall, team="TAAA", event_id="EvUninstall"))
    assert status == 200
    await fake_slack.wait_for(
        lambda: not [p for p in store_dir.rglob("*") if p.is_file() and "TAAA" in str(p)] or None, timeout=10
    )
    assert await bot.installation_store.async_find_bot(enterprise_id=None, team_id="TAAA") is None


async def test_two_workspaces_with_the_same_user_id_are_kept_apart(multi_bot, fake_slack):
    bot, engine, settings = multi_bot
    for team in ("TAAA", "TBBB"):
        await _install(bot.endpoints.http_url, fake_slack, team=team, token=f"xoxb-{team}", user="U1")
    url = f"{bot.endpoints.http_url}/slack/events"
    await _say(url, fake_slack, engine, dm_event("My locker code is 4417.", ts=_ts()), team="TAAA")
    await bot.drain()
    await _say(url, fake_slack, engine, dm_event("What is my locker code?", ts=_ts()), team="TBBB")
    await bot.drain()
    assert "4417" not in engine.prompt_text(-1)
    # each workspace was answered with its own token
    posts = fake_slack.calls_to("chat.postMessage")
    assert [c.token for c in posts] == ["xoxb-TAAA", "xoxb-TBBB"]
    await _say(url, fake_slack, engine, dm_event("Remind me of my locker code", ts=_ts()), team="TAAA")
    await bot.drain()
    assert "4417" in engine.prompt_text(-1)


def _slash(fake, text: str, *, channel: str = "C1", user: str = "U1") -> str:
    from urllib.parse import urlencode

    return urlencode(
        {
            "token": "x",
            "team_id": TEAM,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": "ann",
            "command": "/confidante",
            "text": text,
            "api_app_id": "A0TEST",
            "response_url": fake.response_url(),
            "trigger_id": f"trig-{_ts()}",
        }
    )


async def test_slash_export_answers_privately_and_uploads_the_file_to_the_dm(real_bot, fake_slack):
    bot, engine, url = real_bot
    form = "application/x-www-form-urlencoded"
    await _say(url, fake_slack, engine, dm_event("My favourite tea is sencha.", ts=_ts()))
    await bot.drain()
    # in a channel the private export is refused, privately
    await post_signed(url, _slash(fake_slack, "export", channel="C1"), content_type=form)
    (refused,) = await fake_slack.wait_for(lambda: fake_slack.calls_to("response_url"), timeout=30)
    assert "direct chat" in refused.args["text"] and refused.args["response_type"] == "ephemeral"
    status, _, seconds = await post_signed(url, _slash(fake_slack, "export", channel="D1"), content_type=form)
    assert status == 200 and seconds < 1.5
    await fake_slack.wait_for(lambda: fake_slack.calls_to("files.completeUploadExternal"), timeout=30)
    await bot.drain()
    answer = fake_slack.calls_to("response_url")[-1]
    assert answer.args["response_type"] == "ephemeral" and "memories" in answer.args["text"]
    (opened,) = fake_slack.calls_to("conversations.open")
    assert opened.args["users"] == "U1"
    (complete,) = fake_slack.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "D1"  # the person's DM
    (content,) = fake_slack.uploads.values()
    assert "sencha" in content.decode()
    assert not fake_slack.posted_in("C1")


async def test_forget_me_from_the_slash_command_with_its_confirm_button(real_bot, fake_slack):
    bot, engine, url = real_bot
    await _say(url, fake_slack, engine, dm_event("My passport number is X1234567.", ts=_ts()))
    await bot.drain()
    await post_signed(
        url, _slash(fake_slack, "forget-me", channel="D1"), content_type="application/x-www-form-urlencoded"
    )
    (first,) = await fake_slack.wait_for(lambda: fake_slack.calls_to("response_url"), timeout=30)
    await bot.drain()
    (actions,) = [b for b in first.args["blocks"] if b["type"] == "actions"]
    button = actions["elements"][0]
    assert button["value"] == "/forget_me confirm"
    press = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": "U1", "team_id": TEAM},
        "api_app_id": "A0TEST",
        "container": {"type": "message", "message_ts": "1.1", "channel_id": "D1", "is_ephemeral": True},
        "channel": {"id": "D1", "name": "directmessage"},
        "trigger_id": "9.9.9",
        "response_url": fake_slack.response_url(),
        "actions": [{**button, "block_id": "b1", "action_ts": "1700300000.1"}],
    }
    from urllib.parse import quote

    status, _, _ = await post_signed(
        url, "payload=" + quote(json.dumps(press)), content_type="application/x-www-form-urlencoded"
    )
    assert status == 200
    await fake_slack.wait_for(lambda: len(fake_slack.calls_to("response_url")) == 2, timeout=30)
    await bot.drain()
    done = fake_slack.calls_to("response_url")[-1]
    assert "erased everything" in done.args["text"]
    # nothing of the person is left to reach a prompt
    await _say(url, fake_slack, engine, dm_event("What is my passport number?", ts=_ts()))
    await bot.drain()
    assert "X1234567" not in engine.prompt_text(-1)


async def test_odd_ids_and_text_reach_the_core_and_get_an_answer(real_bot, fake_slack):
    bot, engine, url = real_bot
    odd = dm_event(
        "Zalgo t̷e̷x̷t̷ \u202eRTL\u202c and a NUL \x00 and emoji 👩‍👩‍👧", ts=_ts(), user="U'1\"x", channel="D'q"
    )
    await _say(url, fake_slack, engine, odd)
    await bot.drain()
    await _say(url, fake_slack, engine, dm_event("and again", ts=_ts(), user="U'1\"x", channel="D'q"))
    await bot.drain()
    assert "emoji" in engine.prompt_text(-1)  # the first turn was stored and recalled as context
    assert len(fake_slack.posted_in("D'q")) == 2
    # an empty DM (a file shared without text) gets a clear answer, not silence
    await post_signed(url, event_body(dm_event("", ts=_ts(), subtype="file_share"), event_id="EvEmpty"))
    await fake_slack.wait_for(
        lambda: any("empty message" in m.text for m in fake_slack.posted_in("D1")), timeout=30
    )


async def test_only_channel_admins_turn_group_context_off(real_bot, fake_slack):
    """Turning context off or on records (or stops recording) everyone in the channel: the core
    allows it to the channel's admins only, and Slack tells who they are."""
    bot, _, url = real_bot
    fake_slack.admins = {"U9"}  # a workspace admin
    fake_slack.creators["C1"] = "U8"  # the channel's creator

    async def context(user: str, arg: str) -> str:
        before = len(fake_slack.posted_in("C1"))
        event = mention_event(f"/context {arg}", ts=_ts(), user=user)
        status, _, _ = await post_signed(url, event_body(event, event_id=f"Ev{_ts()}"))
        assert status == 200
        await fake_slack.wait_for(lambda: len(fake_slack.posted_in("C1")) > before, timeout=30)
        await bot.drain()
        return fake_slack.posted_in("C1")[-1].text

    chat = bot.assistant.store.chat
    assert await context("U1", "off") == "Only this group's admins can turn group context on or off."
    assert chat("slack", f"{TEAM}:C1").record_context, "a member's change is refused"
    assert "off" in await context("U9", "off")
    assert not chat("slack", f"{TEAM}:C1").record_context
    assert "on" in await context("U8", "on")
    assert chat("slack", f"{TEAM}:C1").record_context
    asked = [c.args.get("user") for c in fake_slack.calls_to("users.info")]
    assert asked == ["U1", "U9", "U8"]
