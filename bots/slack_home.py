"""The App Home tab: what the assistant knows about the person, with a forget button per item.

It is built from the core's `/memory` answer (text plus one button per item), so the home tab
shows exactly what `/memory` would show in a DM, never more.
"""

from __future__ import annotations

from typing import Any

from bots.slack_render import render_pieces
from bots.slack_reply import BUTTON_ACTION_PREFIX
from core.messages import Button

# Slack allows 100 blocks in a Home tab view.
_MAX_BLOCKS = 100


def home_view(memory_text: str, buttons: list[Button]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "What I know about you"}},
    ]
    for piece in render_pieces(memory_text) or ["_Nothing yet. Talk to me in a DM and I will remember._"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    if buttons:
        blocks.append({"type": "divider"})
    for i, button in enumerate(buttons):
        if len(blocks) >= _MAX_BLOCKS - 1:
            break
        blocks.append(
            {
                "type": "section",
                "text": {"type": "plain_text", "text": button.label[:3000] or "…", "emoji": True},
                "accessory": {
                    "type": "button",
                    "action_id": f"{BUTTON_ACTION_PREFIX}home_{i}",
                    "text": {
                        "type": "plain_text",
                        "text": "Forget" if "forget" in button.command else "Do it",
                    },
                    "value": button.command[:2000],
                    "style": "danger" if "forget" in button.command else "primary",
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Only you see this. `/confidante forget-me` erases everything.",
                }
            ],
        }
    )
    return {"type": "home", "blocks": blocks[:_MAX_BLOCKS]}
