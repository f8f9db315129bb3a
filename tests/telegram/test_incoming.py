"""Reading Telegram messages: chat kind, addressing, mentions with UTF-16 offsets, odd senders."""

from __future__ import annotations

from telegram import Message

from bots.telegram_incoming import BotIdentity, to_incoming
from tests.telegram.fake_bot_api import BOT, group_chat, message, private_chat, user

ME = BotIdentity(BOT["id"], BOT["username"])
ADA = user(31, "Ada", "ada")
GROUP = group_chat(-1005)
COMMANDS = frozenset({"help", "memory"})


def read(data: dict, **kw):
    return to_incoming(Message.de_json(data, None), ME, commands=COMMANDS, **kw)


def test_mention_after_emoji_uses_utf16_offsets_and_is_removed_from_the_text():
    text = "👩🏽‍💻 hey @confidantetestbot, summarize please"
    got = read(message(GROUP, ADA, text, mention="@confidantetestbot")).incoming
    assert got.addressed and got.text == "👩🏽‍💻 hey summarize please"


def test_mentioning_someone_else_is_not_addressing_the_bot():
    got = read(message(GROUP, ADA, "ask @someoneelse", mention="@someoneelse")).incoming
    assert got.addressed is False and got.chat_kind == "group"


def test_bare_known_command_in_a_group_is_addressed_unknown_one_is_context():
    assert read(message(GROUP, ADA, "/help", command="/help")).incoming.addressed
    assert read(message(GROUP, ADA, "/weather", command="/weather")).incoming.addressed is False


def test_command_suffix_for_this_bot_is_stripped_with_arguments_kept():
    got = read(
        message(GROUP, ADA, "/memory@ConfidanteTestBot books", command="/memory@ConfidanteTestBot")
    ).incoming
    assert (got.text, got.addressed) == ("/memory books", True)


def test_anonymous_admin_speaks_as_the_group_and_channel_posts_are_ignored():
    anon = message(
        GROUP,
        user(1087968824, "Group"),
        "hi all",
        extra={"sender_chat": {"id": -1005, "type": "supergroup", "title": "Team"}},
    )
    got = read(anon).incoming
    assert got.sender_id == "-1005" and got.sender_name == "Team"
    channel = message({"id": -1009, "type": "channel", "title": "News"}, ADA, "post")
    assert read(channel).incoming is None


def test_service_messages_are_silently_skipped_and_unreadable_only_flagged_when_addressed():
    joined = message(GROUP, ADA, None, extra={"new_chat_members": [user(40, "Cy")]})
    assert read(joined) == read(joined).__class__(None)
    sticker = {
        "file_id": "s",
        "file_unique_id": "u",
        "type": "regular",
        "width": 1,
        "height": 1,
        "is_animated": False,
        "is_video": False,
    }
    assert read(message(private_chat(ADA), ADA, None, extra={"sticker": sticker})).unreadable == "stickers"
    assert read(message(GROUP, ADA, None, extra={"sticker": sticker})).unreadable is None


def test_quotes_and_odd_ids_pass_through_as_plain_strings():
    text = "it's \"quoted\" ' OR 1=1 --"
    got = read(message(private_chat(ADA), ADA, text, message_id=123)).incoming
    assert (got.text, got.message_id, got.chat_id, got.chat_kind) == (text, "123", "31", "direct")
