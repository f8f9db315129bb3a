"""Unit tests for what needs no server: Slack text <-> Markdown, splitting, event mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.channel import RecentIds, split_text
from bots.slack_events import ThreadMemory, command_text, slash_command_text, to_incoming
from bots.slack_home import home_view
from bots.slack_render import (
    SECTION_TEXT_LIMIT,
    escape,
    markdown_to_mrkdwn,
    render_pieces,
    slack_to_plain,
)

BOT = "UBOT"


def body(event, team="T1"):
    return {"team_id": team, "event": event, "type": "event_callback", "event_id": "Ev1"}


def test_markdown_becomes_mrkdwn_and_control_characters_are_escaped():
    md = "# Plan\n**bold** *it* ~~old~~ `a<b` [docs](https://x.io/?a=1&b=2)\n- one\n<!channel> & <@U1>"
    out = markdown_to_mrkdwn(md)
    assert out.splitlines()[0] == "*Plan*"
    assert "*bold* _it_ ~old~ `a&lt;b` <https://x.io/?a=1&amp;b=2|docs>" in out
    assert "• one" in out
    assert "&lt;!channel&gt; &amp; &lt;@U1&gt;" in out
    assert "<!channel>" not in out and "<@U1>" not in out


def test_code_fences_are_kept_verbatim_but_escaped():
    out = markdown_to_mrkdwn("```python\nif a < b and **c**:\n    pass\n```")
    assert out == "```\nif a &lt; b and **c**:\n    pass\n```"


@given(st.text(max_size=400))
def test_rendering_never_lets_a_raw_control_sequence_through(text):
    out = markdown_to_mrkdwn(text)
    # every '<' left is one we produced for a link, which always has the form <http...|...>
    for i, ch in enumerate(out):
        if ch == "<":
            assert out.startswith("<http", i)
    assert "\x00" not in out


def test_slack_text_becomes_plain_text_without_our_mention():
    raw = "<@UBOT> ping <@U2|ann> see <https://a.b/c|the doc> in <#C1|general> &lt;3 &amp; <!here>"
    assert (
        slack_to_plain(raw, bot_user_id=BOT) == "ping @ann see the doc (https://a.b/c) in #general <3 & @here"
    )


@given(st.text(min_size=0, max_size=3000), st.integers(min_value=16, max_value=500))
def test_split_text_respects_the_limit_and_keeps_the_words(text, limit):
    pieces = split_text(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert "".join(text.split()) == "".join("".join(pieces).split())


def test_long_replies_render_below_the_section_limit():
    text = ("word & <tag> " * 2000).strip()
    pieces = render_pieces(text)
    assert len(pieces) > 1
    assert all(len(p) <= SECTION_TEXT_LIMIT for p in pieces)
    assert all("&amp;" in p for p in pieces)  # no entity was cut in half
    assert not any(p.endswith("&") or p.endswith("&am") for p in pieces)


def test_dm_maps_with_team_scoped_ids():
    ev = {
        "type": "message",
        "channel": "D9",
        "user": "U5",
        "text": "hi",
        "ts": "1700000000.000100",
        "channel_type": "im",
    }
    msg = to_incoming(body(ev, team="TX"), ev, bot_user_id=BOT, threads=ThreadMemory())
    assert (msg.sender_id, msg.chat_id, msg.chat_kind, msg.addressed, msg.thread_id) == (
        "TX:U5",
        "TX:D9",
        "direct",
        True,
        None,
    )
    assert msg.message_id == "1700000000.000100"
    assert msg.workspace == "TX", "the channel names the workspace; an allow-list may name it alone"


def test_same_user_id_in_two_workspaces_is_two_senders():
    ev = {"type": "message", "channel": "D1", "user": "U1", "text": "x", "ts": "1.1", "channel_type": "im"}
    a = to_incoming(body(ev, team="TA"), ev, bot_user_id=BOT, threads=ThreadMemory())
    b = to_incoming(body(ev, team="TB"), ev, bot_user_id=BOT, threads=ThreadMemory())
    assert a.sender_id != b.sender_id and a.chat_id != b.chat_id


def test_thread_started_by_the_bot_is_addressed_even_after_a_restart():
    ev = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": "re",
        "ts": "2.2",
        "thread_ts": "2.1",
        "parent_user_id": BOT,
        "channel_type": "channel",
    }
    msg = to_incoming(body(ev), ev, bot_user_id=BOT, threads=ThreadMemory())
    assert msg.addressed and msg.thread_id == "2.1"


def test_channel_message_mentioning_the_bot_is_left_to_app_mention():
    ev = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": f"<@{BOT}> hi",
        "ts": "3.1",
        "channel_type": "channel",
    }
    assert to_incoming(body(ev), ev, bot_user_id=BOT, threads=ThreadMemory()) is None


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("/confidante forget-me", "/forget_me"),
        ("/forget-me", "/forget_me"),
        ("forget-me", "/forget_me"),
        ("memory", "/memory"),
        ("Memory", "/memory"),
        ("memory is weird", "memory is weird"),
        ("/confidante", "/help"),
        ("/forget 3", "/forget 3"),
    ],
)
def test_commands_typed_in_a_dm(typed, expected):
    assert command_text(typed, ["help", "memory", "forget_me", "forget"]) == expected


def test_slash_command_text():
    assert slash_command_text("") == "/help"
    assert slash_command_text("  export ") == "/export"
    assert slash_command_text("forget my marathon") == "/forget my marathon"


def test_seen_events_drops_repeats_and_expires():
    seen = RecentIds(ttl=0.0)
    assert seen.add("a")
    assert seen.add("a")  # expired immediately with ttl 0
    seen = RecentIds(ttl=7200.0, maxlen=2)
    assert seen.add("b") and not seen.add("b")
    assert seen.add("c") and seen.add("d") and seen.add("b"), "the oldest is pushed out past maxlen"


def test_home_view_has_a_forget_button_per_item_and_escapes_text():
    text = "What I know about you:\n1. Likes <b>tea</b> & cake\n2. Runs marathons\nForget one with /forget <number>."
    view = home_view(text)
    buttons = [b["accessory"] for b in view["blocks"] if "accessory" in b]
    assert [b["value"] for b in buttons] == ["/forget 1", "/forget 2"]
    assert "&lt;b&gt;tea&lt;/b&gt; &amp; cake" in str(view)
    assert escape("<") == "&lt;"


def test_home_view_is_capped_at_slacks_block_limit():
    text = "\n".join(f"{i}. item {i}" for i in range(1, 300))
    assert len(home_view(text)["blocks"]) <= 100


def test_threads_the_bot_is_in_survive_a_restart(tmp_path):
    path = tmp_path / "slack" / "threads.tsv"
    first = ThreadMemory(path=path)
    first.add("T1", "C1", "5.1")
    first.add("T1", "C1", "5.1")
    again = ThreadMemory(path=path)
    assert ("T1", "C1", "5.1") in again and ("T1", "C1", "5.2") not in again
    ev = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": "more",
        "ts": "5.3",
        "thread_ts": "5.1",
        "channel_type": "channel",
    }
    assert to_incoming(body(ev), ev, bot_user_id=BOT, threads=again).addressed
    small = ThreadMemory(max_size=2, path=tmp_path / "small.tsv")
    for i in range(10):
        small.add("T", "C", str(i))
    assert ("T", "C", "0") not in small and ("T", "C", "9") in small
