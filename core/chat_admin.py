"""Who may change a group's settings: the rule lives here, every channel only reports whether
the sender administers the chat (`Incoming.sender_admin`).

Turning group context on records everyone's unaddressed messages, so only the group's admins
may switch it, on every platform alike.
"""

from __future__ import annotations

import re

from core.messages import Incoming

ADMINS_ONLY = "Only this group's admins can turn group context on or off."
_CONTEXT_CHANGE = re.compile(r"^/context(?:@\S+)?\s+(on|off)\b", re.IGNORECASE)


def needs_admin(msg: Incoming) -> bool:
    """A group message that changes a setting only its admins may change."""
    return msg.chat_kind == "group" and bool(_CONTEXT_CHANGE.match(msg.text.strip()))


def may_change(msg: Incoming) -> bool:
    """Whether the sender may make this change: anyone in a direct chat, an admin in a group.
    A channel that could not tell (`sender_admin` None) gets the change refused, never made."""
    return not needs_admin(msg) or msg.sender_admin is True
