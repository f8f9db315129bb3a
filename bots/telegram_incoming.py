"""Telegram message -> `Incoming`: who spoke, where, and whether the assistant was addressed.

In a group Telegram may show the bot every message (privacy mode off) or only commands,
mentions and replies (privacy mode on); either way the bot answers only when addressed and
hands everything else to the core as group context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message, MessageEntity, User

from core.messages import Incoming

PLATFORM = "telegram"

# what a message without text or caption carries, in words for the "what I can read" reply
_ATTACHMENTS = {
    "sticker": "stickers",
    "photo": "images",
    "voice": "voice notes",
    "video_note": "video messages",
    "audio": "audio",
    "video": "videos",
    "animation": "GIFs",
    "document": "files",
    "location": "locations",
    "venue": "locations",
    "contact": "contacts",
    "poll": "polls",
    "dice": "dice",
}

UNREADABLE_REPLY = (
    "I can't read {what} here yet, so I can't see what you sent. Please type what you'd like me to know."
)


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str


@dataclass(frozen=True)
class Mapped:
    """The channel's reading of one message."""

    incoming: Incoming | None  # None: nothing for the core (a service message, another bot's command)
    unreadable: str | None = None  # what kind of content we cannot read, when that is all there is


def missing_field(message: Message) -> str | None:
    """The field every Telegram message has that this one lacks (a broken or forged update)."""
    if message.chat is None:
        return "chat"
    if message.chat.id is None:
        return "chat.id"
    if message.message_id is None:
        return "message_id"
    if message.date is None:
        return "date"
    return None


def chat_kind(message: Message) -> str | None:
    kind = message.chat.type
    if kind == "private":
        return "direct"
    if kind in ("group", "supergroup"):
        return "group"
    return None  # channels: not a conversation with a person


def thread_id(message: Message) -> int | None:
    """The forum topic to answer in; plain reply threads in non-forum groups are not topics."""
    if message.chat.is_forum and message.is_topic_message and message.message_thread_id:
        return message.message_thread_id
    return None


def sender_id(message: Message) -> str | None:
    if message.sender_chat is not None:  # anonymous admin or a linked channel speaking
        return str(message.sender_chat.id)
    if message.from_user is not None:
        return str(message.from_user.id)
    return None


def _sender_name(message: Message) -> str:
    if message.sender_chat is not None:
        return message.sender_chat.title or message.sender_chat.username or ""
    user: User | None = message.from_user
    return user.full_name if user else ""


def _entities(message: Message) -> dict[MessageEntity, str]:
    if message.text is not None:
        return message.parse_entities()
    return message.parse_caption_entities()


def is_reply_to_bot(message: Message, bot: BotIdentity) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.forum_topic_created is not None:
        return False  # in a forum every topic message "replies" to the topic's opening
    return replied.from_user is not None and replied.from_user.id == bot.id


def mentions_bot(message: Message, bot: BotIdentity) -> bool:
    for entity, text in _entities(message).items():
        if entity.type == MessageEntity.MENTION and text[1:].lower() == bot.username.lower():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot.id:
            return True
    return False


def to_incoming(
    message: Message,
    bot: BotIdentity,
    *,
    edited: bool = False,
    commands: frozenset[str] = frozenset(),
    text: str | None = None,
) -> Mapped:
    """Read one message. `commands` are the core's command names, addressed even without @Bot.
    `text` stands in when the message has neither text nor caption (a voice note being read)."""
    kind = chat_kind(message)
    sender = sender_id(message)
    if kind is None or sender is None:
        return Mapped(None)
    raw = message.text if message.text is not None else message.caption
    if raw is None:
        raw = text
    addressed = kind == "direct" or is_reply_to_bot(message, bot)
    if raw is None:
        what = next((name for attr, name in _ATTACHMENTS.items() if getattr(message, attr, None)), None)
        if what is None:
            return Mapped(None)  # service messages: joins, pins, topic changes
        return Mapped(None, unreadable=what if addressed else None)

    text = raw
    if raw.startswith("/"):
        text, addressee = strip_command_suffix(raw, bot.username)
        if addressee is not None and addressee.lower() != bot.username.lower():
            return Mapped(None)  # a command for another bot in the same group
        name = text[1:].split(maxsplit=1)[0].lower() if len(text) > 1 else ""
        if addressee is not None or name in commands:
            addressed = True
    if mentions_bot(message, bot):
        addressed = True
        text = remove_mention(text, bot.username)

    topic = thread_id(message)
    replied = message.reply_to_message
    return Mapped(
        Incoming(
            platform=PLATFORM,
            chat_id=str(message.chat.id),
            sender_id=sender,
            text=text,
            message_id=str(message.message_id),
            chat_kind=kind,  # type: ignore[arg-type]
            sender_name=_sender_name(message),
            thread_id=str(topic) if topic else None,
            addressed=addressed,
            reply_to=str(replied.message_id) if replied and replied.forum_topic_created is None else None,
            ts=message.edit_date or message.date if edited else message.date,
            edited=edited,
        )
    )


def strip_command_suffix(text: str, bot_username: str) -> tuple[str, str | None]:
    """Turn "/memory@ThisBot args" into "/memory args".

    Returns (text, addressee): addressee is the @name the command carried (None when bare), so
    the caller can tell a command for this bot from one for another bot in the same group.
    """
    m = re.match(r"^/([A-Za-z0-9_]{1,64})@([A-Za-z0-9_]{3,64})(?=\s|$)", text)
    if not m:
        return text, None
    if m.group(2).lower() != bot_username.lower():
        return text, m.group(2)
    return f"/{m.group(1)}{text[m.end() :]}", m.group(2)


def remove_mention(text: str, bot_username: str) -> str:
    """Drop "@ThisBot" from the text so the model reads what was said, not how it was addressed."""
    cleaned = re.sub(rf"(?<![\w@])@{re.escape(bot_username)}\b[,:]?", " ", text, flags=re.IGNORECASE)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return cleaned or text.strip()
