"""Markdown -> Slack mrkdwn, Slack text -> plain text, and splitting below Slack's limits.

The model writes CommonMark-ish Markdown; Slack's `mrkdwn` differs (single `*` is bold, links are
`<url|label>`, no headings) and treats `&`, `<`, `>` as control characters, so anything that came
from a model or a person is escaped before it reaches Slack: a reply can never ping `<!channel>`.
"""

from __future__ import annotations

import html
import re

# Slack's documented limits: a message's text field (40,000; Slack truncates beyond) and a
# section block's text (3,000). We render replies as section blocks, so the smaller one rules.
MESSAGE_TEXT_LIMIT = 40_000
SECTION_TEXT_LIMIT = 3_000
# chat.appendStream / chat.startStream accept at most 12,000 characters of markdown_text per call.
STREAM_CHUNK_LIMIT = 12_000

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


def escape(text: str) -> str:
    """Escape Slack's three control characters, as Slack's formatting guide requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_to_mrkdwn(text: str) -> str:
    """Convert the Markdown a model writes into Slack mrkdwn, escaping everything else.

    Code spans and fences are kept verbatim (escaped, since Slack parses `<` even there); links
    become `<url|label>` with the label escaped; `**bold**` becomes `*bold*`, `*it*` `_it_`,
    `~~s~~` `~s~`, headings bold lines and list markers bullets.
    """
    slots: list[str] = []

    def keep(rendered: str) -> str:
        slots.append(rendered)
        return f"\x00{len(slots) - 1}\x00"

    text = text.replace("\x00", "")
    text = _FENCE.sub(lambda m: keep("```\n" + escape(m.group(1).rstrip("\n")) + "\n```"), text)
    text = _INLINE_CODE.sub(lambda m: keep("`" + escape(m.group(1)) + "`"), text)
    text = _LINK.sub(lambda m: keep(f"<{_escape_url(m.group(2))}|{escape(m.group(1))}>"), text)
    text = escape(text)
    text = _HEADING.sub(lambda m: keep("*" + m.group(1).strip("*_ ") + "*"), text)
    text = _BOLD.sub(lambda m: keep("*" + m.group(2) + "*"), text)
    text = _ITALIC_STAR.sub(lambda m: "_" + m.group(1) + "_", text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    text = _BULLET.sub(lambda m: m.group(1) + "• ", text)
    while _PLACEHOLDER.search(text):
        text = _PLACEHOLDER.sub(lambda m: slots[int(m.group(1))], text)
    return text


def _escape_url(url: str) -> str:
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL_MENTION = re.compile(r"<#(C[A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!(\w+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_URL = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


def slack_to_plain(text: str, *, bot_user_id: str | None = None) -> str:
    """Turn the text of a Slack message into what a person would read, for the model.

    The mention of the bot itself is removed (it is how the person addressed us, not content);
    other mentions become `@U…`/`#name`, links their label and URL, entities are unescaped.
    """
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*", "", text)
    text = _USER_MENTION.sub(lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = _CHANNEL_MENTION.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL.sub(lambda m: "@" + (m.group(2) or m.group(1)).lstrip("@"), text)
    text = _URL.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    return html.unescape(text).strip()


def fit(raw: str, limit: int) -> int:
    """How much of `raw` Markdown fits in one message once rendered as mrkdwn: an index at a
    paragraph, line or word boundary where possible (escaping can make text longer)."""
    if len(markdown_to_mrkdwn(raw)) <= limit:
        return len(raw)
    k = min(len(raw), limit)
    while k > 1 and len(markdown_to_mrkdwn(raw[:k])) > limit:
        k = int(k * 0.8)
    for sep in ("\n\n", "\n", " "):
        idx = raw.rfind(sep, 0, k)
        if idx > k // 2:
            return idx + len(sep)
    return max(k, 1)


def render_pieces(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Markdown -> mrkdwn pieces, each at most `limit` characters after rendering."""
    pieces: list[str] = []
    rest = text
    while rest.strip():
        k = fit(rest, limit)
        piece = markdown_to_mrkdwn(rest[:k]).strip()
        if piece:
            pieces.append(piece[:limit])
        rest = rest[k:]
    return pieces


def take_escaped(escaped: str, limit: int) -> int:
    """A cut index <= limit in already-escaped text that does not split an `&amp;` entity."""
    if len(escaped) <= limit:
        return len(escaped)
    amp = escaped.rfind("&", max(0, limit - 5), limit)
    if amp > 0 and ";" not in escaped[amp:limit]:
        return amp
    return limit
