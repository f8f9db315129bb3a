"""The Matrix channel's pure parts: rendering, splitting, addressing, invites, saved state."""

from __future__ import annotations

import json
import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from bots.channel import split_text
from bots.matrix_addressing import (
    inviter_allowed,
    is_command,
    mentions_bot,
    replied_to,
    strip_leading_mention,
    strip_reply_fallback,
    thread_root,
)
from bots.matrix_render import content_size, edit_content, edit_size, message_content, to_html
from bots.matrix_state import Credentials, MatrixState

BOT = "@confidante:example.org"


def test_markdown_becomes_matrix_html_and_raw_html_is_escaped():
    html = to_html("**bold** and <script>alert(1)</script> [x](javascript:alert(1))")
    assert "<strong>bold</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html
    content = message_content("# Title\n\n- a\n- b")
    assert content["body"] == "# Title\n\n- a\n- b"  # the plain body stays what the model wrote
    assert content["format"] == "org.matrix.custom.html" and "<h1>Title</h1>" in content["formatted_body"]


def test_an_edit_carries_the_new_content_and_points_at_the_original():
    edit = edit_content("$orig", "new *text*")
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert edit["m.new_content"]["body"] == "new *text*"
    assert edit["m.new_content"]["formatted_body"] == "new <em>text</em>"
    assert edit["body"].startswith("* ")


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=3000))
def test_split_keeps_every_character_and_every_part_fits(text):
    parts = split_text(text, 2000, length=edit_size, exact=True)
    assert "".join(parts) == text
    assert all(parts)
    assert all(content_size(edit_content("$" + "x" * 60, p)) <= 2000 for p in parts if len(p) > 1)


def test_split_prefers_paragraph_boundaries():
    text = "\n\n".join(f"paragraph {i} " + "word " * 80 for i in range(20))
    parts = split_text(text, 3000, length=edit_size, exact=True)
    assert len(parts) > 1
    assert all(p.endswith("\n\n") for p in parts[:-1])


def test_invite_allow_list():
    assert inviter_allowed("@alice:example.org", BOT, [])  # own homeserver by default
    assert not inviter_allowed("@eve:evil.example", BOT, [])
    assert inviter_allowed("@eve:evil.example", BOT, ["evil.example"])
    assert inviter_allowed("@eve:evil.example", BOT, [":evil.example"])
    assert inviter_allowed("@bob:other.org", BOT, ["@bob:other.org"])
    assert not inviter_allowed("@bobby:other.org", BOT, ["@bob:other.org"])
    assert not inviter_allowed("@alice:example.org", BOT, ["@bob:other.org"])  # a list replaces the default
    assert inviter_allowed("@anyone:anywhere", BOT, ["*"])
    assert not inviter_allowed("not-a-user-id", BOT, [])


def test_addressing_rules():
    assert mentions_bot({"m.mentions": {"user_ids": [BOT]}}, "hey", BOT, "Confidante")
    assert not mentions_bot({"m.mentions": {"user_ids": ["@other:x"]}}, "hey all", BOT, "Confidante")
    assert mentions_bot({}, "confidante, what time is it?", BOT, "Confidante")
    assert mentions_bot({}, f"ping {BOT}", BOT, "Confidante")
    assert not mentions_bot({}, "the confidantes club", BOT, "Confidante")  # not a word match
    assert not mentions_bot({}, "email confidante@example.org", BOT, "Confidante")
    assert strip_leading_mention("Confidante: what's up", BOT, "Confidante") == "what's up"
    assert strip_leading_mention(f"{BOT} hi", BOT, "Confidante") == "hi"
    assert strip_leading_mention("hello Confidante", BOT, "Confidante") == "hello Confidante"
    assert is_command("/help", ["help", "forget_me"]) and is_command("/FORGET_ME now", ["forget_me"])
    assert (
        not is_command("/shrug", ["help"])
        and not is_command("help", ["help"])
        and not is_command("", ["help"])
    )


def test_relations():
    thread = {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": "$root",
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": "$last"},
        }
    }
    assert thread_root(thread) == "$root" and replied_to(thread) is None
    real_reply_in_thread = {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": "$root",
            "is_falling_back": False,
            "m.in_reply_to": {"event_id": "$bot"},
        }
    }
    assert replied_to(real_reply_in_thread) == "$bot"
    assert replied_to({"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}) == "$x"
    assert thread_root({"m.relates_to": "garbage"}) is None and replied_to({}) is None
    assert strip_reply_fallback("> <@bot:x> earlier answer\n> more\n\nmy question") == "my question"
    assert strip_reply_fallback("> just a quote I typed") == "> just a quote I typed"


def test_state_survives_a_restart_and_is_private(tmp_path):
    state = MatrixState(tmp_path / "matrix")
    state.save_credentials(Credentials("http://hs", "@bot:hs", "DEVICE", "secret-token"))
    state.accept("$1", "!room")
    state.accept("$2", "!room")
    state.done("$1")
    state.set_token("s123")
    again = MatrixState(tmp_path / "matrix")
    assert again.load_credentials() == Credentials("http://hs", "@bot:hs", "DEVICE", "secret-token")
    assert again.next_batch == "s123" and again.seen("$1") and again.seen("$2") and not again.seen("$3")
    assert again.pending == {"$2": "!room"}
    for name in ("credentials.json", "state.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "matrix" / name).st_mode) == 0o600


def test_a_torn_state_file_starts_afresh_instead_of_crashing(tmp_path):
    (tmp_path / "matrix").mkdir()
    (tmp_path / "matrix" / "state.json").write_text('{"next_batch": "s1", "handl')
    (tmp_path / "matrix" / "credentials.json").write_text(json.dumps({"user_id": "@x:y"}))
    state = MatrixState(tmp_path / "matrix")
    assert state.next_batch is None and state.load_credentials() is None
