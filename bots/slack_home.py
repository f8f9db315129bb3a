"""The App Home tab: what the assistant knows about the person, with a forget button per item.

It is built from the core's `/memory` answer, so the tab shows exactly what `/memory` shows in
a DM and never more: the numbered lines become items whose button sends `/forget <number>`
(the home is republished after every press, so the numbers stay current).
"""

from __future__ import annotations

import re
from typing import Any

from bots.slack_render import escape, render_pieces
from bots.slack_reply import BUTTON_ACTION_PREFIX

# Slack allows 100 blocks in a Home tab view; a section's text is at most 3,000 characters.
_MAX_BLOCKS = 100
_ITEM = re.compile(r"^\s*(\d+)\.\s+(.+)$")


def home_view(memory_text: str) -> dict[str, Any]:
    intro: list[str] = []
    items: list[tuple[str, str]] = []
    outro: list[str] = []
    for line in memory_text.splitlines():
        match = _ITEM.match(line)
        if match:
            items.append((match.group(1), match.group(2)))
        elif items:
            outro.append(line)
        else:
            intro.append(line)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "What I know about you"}},
    ]
    for piece in render_pieces("\n".join(intro)):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    room = _MAX_BLOCKS - len(blocks) - 3
    for number, text in items[:room]:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{number}.* {escape(text)}"[:3000]},
                "accessory": {
                    "type": "button",
                    "action_id": f"{BUTTON_ACTION_PREFIX}home_{number}",
                    "text": {"type": "plain_text", "text": "Forget"},
                    "value": f"/forget {number}",
                    "style": "danger",
                },
            }
        )
    if len(items) > room:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"…and {len(items) - room} more: send `/confidante memory` in a DM.",
                    }
                ],
            }
        )
    footer = "Only you see this. `/confidante forget-me` erases everything."
    if outro and not items:
        footer = escape(" ".join(outro)) + " " + footer
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return {"type": "home", "blocks": blocks[:_MAX_BLOCKS]}
