"""Matrix message content: Markdown to `org.matrix.custom.html`, edits, and their size.

The model writes Markdown; Matrix clients show `formatted_body` (HTML) and fall back to the
plain `body`. Raw HTML in the text (the model may echo what a person typed) is escaped, never
passed through, and unsafe link schemes are refused by markdown-it's link validation.
"""

from __future__ import annotations

import json
from typing import Any

from markdown_it import MarkdownIt

# Synapse refuses events over 65,536 bytes (the whole signed PDU). An edit carries the text
# three times (a plain fallback body, then body and formatted_body in m.new_content) and encryption inflates the
# JSON by a third (base64), so one message's *content* is kept well below the limit.
EVENT_SIZE_LIMIT = 65_536
MAX_CONTENT_BYTES = 40_000

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["strikethrough", "table"]
)


def to_html(markdown: str) -> str:
    """Render Markdown to the HTML subset Matrix clients accept; raw HTML is escaped."""
    html = _md.render(markdown).strip()
    # A single paragraph renders without the <p> wrapper: clients show it inline, like plain text.
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return html


def message_content(text: str, msgtype: str = "m.text") -> dict[str, Any]:
    """A plain-body-plus-HTML message content (no relation)."""
    return {
        "msgtype": msgtype,
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": to_html(text),
    }


def with_relation(content: dict[str, Any], relation: dict[str, Any] | None) -> dict[str, Any]:
    if relation:
        content = {**content, "m.relates_to": relation}
    return content


def edit_content(original_event_id: str, text: str, msgtype: str = "m.text") -> dict[str, Any]:
    """An `m.replace` edit: the fallback body starts with '*', the real content is m.new_content."""
    # The fallback (for clients without edit support) is plain text only: the HTML copy would
    # add a fourth copy of the text to an event that has to stay below the size limit.
    return {
        "msgtype": msgtype,
        "body": f"* {text}",
        "m.new_content": message_content(text, msgtype),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_event_id},
    }


def content_size(content: dict[str, Any]) -> int:
    return len(json.dumps(content, ensure_ascii=False).encode("utf-8"))


def edit_size(text: str) -> int:
    """The worst case a streamed part reaches: the final edit of its message (how Matrix text
    is measured against `MAX_CONTENT_BYTES` when bots.channel.split_text cuts it)."""
    return content_size(edit_content("$" + "x" * 60, text))
