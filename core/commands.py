"""Commands every channel shares: seeing, exporting and erasing what the assistant knows.

What a command shows is limited by the chat it is asked in, like recall: in a group only what
belongs to that group; export and erasure only in a direct chat.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from core import chat_admin, own_data
from core.identity import LinkError
from core.memory.export import export_person
from core.memory.recall import ChatContext
from core.memory.records import PRIVATE, Memory, Person, Turn
from core.messages import Button, Document, Incoming, Reply
from core.reminders.parse import ParseError, zone
from core.signin import SignInLinks
from core.text import preview

if TYPE_CHECKING:
    from core.access import Access
    from core.config import Settings
    from core.forgetting import Forgetting
    from core.identity import Identities
    from core.memory.store import Store
    from core.reminders.service import Reminders

log = structlog.get_logger(__name__)

CONFIRM_SECONDS = 300
MEMORY_LIST_TURNS = 20

MENU: list[tuple[str, str]] = [
    ("help", "What I can do"),
    ("memory", "What I know about you (add 'history' for what changed)"),
    ("forget", "Forget an item: /forget 3 or /forget marathon"),
    ("export", "All your data as a JSON file"),
    ("forget_me", "Erase everything about you"),
    ("remind", "Set a reminder: /remind tomorrow at 9 call mum"),
    ("reminders", "Your reminders (/reminders cancel 2)"),
    ("timezone", "Your time zone for reminders: /timezone Europe/Berlin"),
    ("followups", "Let me check in on dated things you mention (/followups on|off)"),
    ("pause", "Stop remembering new messages"),
    ("resume", "Start remembering again"),
    ("link", "Join your accounts on other apps"),
    ("unlink", "Separate this account again"),
    ("whoami", "Which accounts are joined"),
    ("share", "Let this group use your private profile (/share here, /share off)"),
    ("context", "Group: keep unaddressed messages as context (/context on|off)"),
    ("web", "A private page to see, search and correct what I know"),
    ("stats", "Admin: counts, never content"),
]
_NAMES = {name for name, _ in MENU}
_COMMAND = re.compile(r"^/([A-Za-z_]+)(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)


def parse(text: str) -> tuple[str, str] | None:
    match = _COMMAND.match(text.strip())
    if not match:
        return None
    name = match.group(1).lower().replace("-", "_")
    if name not in _NAMES:
        return None
    return name, (match.group(2) or "").strip()


def is_command(text: str) -> bool:
    return parse(text) is not None


def _when(ts: datetime) -> str:
    return f"{ts.day} {ts:%b %Y}"


def _where(turn_or_scope: str) -> str:
    if turn_or_scope == PRIVATE:
        return "in a direct chat"
    _, platform, _chat = turn_or_scope.split(":", 2)
    return f"in a {platform} group"


@dataclass
class Item:
    """One numbered line of /memory: a consolidated memory or a message the person sent."""

    memory: Memory | None = None
    turn: Turn | None = None

    def line(self) -> str:
        if self.memory is not None:
            m = self.memory
            n = len(m.source_turn_ids)
            sources = f", from {n} message{'s' if n != 1 else ''}" if n else ""
            return f"{m.text} ({m.kind}, {_when(m.valid_from)}, {_where(m.visibility)}{sources})"
        t = self.turn
        return f"You said: “{preview(t.text, 120)}” ({_when(t.ts)}, {_where(t.visibility)})"


class Commands:
    """The chat commands. They see the store, the identities (linking), the admin rules and
    forgetting: only what they use, not the assistant that runs the pipeline."""

    def __init__(
        self,
        *,
        store: Store,
        identities: Identities,
        access: Access,
        forgetting: Forgetting,
        settings: Settings,
        reminders: Reminders,
    ) -> None:
        self.settings = settings  # the web page's address, link lifetime, default time zone
        self.reminders = reminders
        self.store = store
        self.identities = identities
        self.access = access
        self.forgetting = forgetting
        self._confirm: dict[str, float] = {}
        self.signin = SignInLinks(settings.web_link_seconds)  # the web page redeems them

    def menu(self) -> list[tuple[str, str]]:
        return list(MENU)

    async def run(self, msg: Incoming, text: str, person: Person, chat: ChatContext) -> Reply:
        name, arg = parse(text) or ("help", "")
        log.info("command", command=name, platform=msg.platform, chat_kind=chat.kind)
        handler = getattr(self, f"_{name}")
        return await handler(msg, arg, person, chat)

    # -- reading ------------------------------------------------------------------------------

    async def _help(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        lines = ["I'm Confidante, your personal assistant. I remember what you tell me so I can help better."]
        lines += [f"/{name} — {desc}" for name, desc in MENU]
        if person.settings.paused and chat.kind == "direct":
            lines.append("Remembering is paused for you (/resume to turn it back on).")
        return Reply(text="\n".join(lines))

    def items(self, person: Person, chat: ChatContext) -> list[Item]:
        """The numbered list /memory shows and /forget N refers to (same order both times)."""
        scopes = [PRIVATE] if chat.kind == "direct" else [chat.scope]
        store = self.store
        memories = store.memories_of(person.person_id, visibilities=scopes)
        turns = store.turns_of(person.person_id, visibilities=scopes)
        said = [t for t in turns if t.role == "user"][-MEMORY_LIST_TURNS:]
        return [Item(memory=m) for m in memories] + [Item(turn=t) for t in reversed(said)]

    async def _memory(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if arg.lower().startswith("hist"):
            return await asyncio.to_thread(self._history, person, chat)
        items = await asyncio.to_thread(self.items, person, chat)
        if not items:
            return Reply(
                text="I don't know anything about you yet"
                + (" in this group." if chat.kind == "group" else ".")
            )
        where = "in this group" if chat.kind == "group" else "about you"
        lines = [f"What I know {where}:"] + [f"{i}. {item.line()}" for i, item in enumerate(items, 1)]
        if person.profile and chat.kind == "direct":
            lines.insert(1, f"Profile: {person.profile}")
        lines.append("Forget one with /forget <number>, or everything about a topic with /forget <words>.")
        return Reply(text="\n".join(lines))

    def _history(self, person: Person, chat: ChatContext) -> Reply:
        scopes = [PRIVATE] if chat.kind == "direct" else [chat.scope]
        old = [
            m
            for m in self.store.memories_of(person.person_id, current_only=False, visibilities=scopes)
            if not m.current
        ]
        if not old:
            return Reply(text="Nothing I knew about you has changed yet.")
        lines = ["What changed (no longer current):"]
        lines += [f"- {m.text} ({m.kind}, {_when(m.valid_from)} until {_when(m.valid_to)})" for m in old]
        return Reply(text="\n".join(lines))

    async def _whoami(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "direct":  # which accounts are one person is private
            return Reply(text="Ask me /whoami in a direct chat.")
        accounts = await asyncio.to_thread(self.store.identities_of, person.person_id)
        lines = ["These accounts are one person to me:"] + [
            f"- {i.platform}: {i.platform_user_id}" for i in accounts
        ]
        tz = person.settings.timezone
        lines.append(f"Time zone: {tz}" if tz else "Time zone: not set (/timezone Europe/Berlin)")
        lines.append(f"Follow-ups: {'on' if person.settings.followups else 'off'} (/followups on|off)")
        return Reply(text="\n".join(lines))

    # -- reminders (core/reminders/) ----------------------------------------------------------

    async def _remind(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if not arg:
            return Reply(
                text="Tell me what and when: /remind tomorrow at 9 call mum, or “remind me in 20 minutes to stretch”."
            )
        if not person.settings.timezone:  # asked once: the platform's profile, else /timezone
            found = await self.reminders.platform_zone(msg.platform, msg.sender_id)
            if found:
                person.settings.timezone = found
                await asyncio.to_thread(self.store.save_person, person)
        text = await self.reminders.set(
            arg,
            person_id=person.person_id,
            tz=person.settings.timezone or None,
            platform=msg.platform,
            chat_id=msg.chat_id,
            chat_kind=msg.chat_kind,
            setter=msg.sender_id,
            thread_id=msg.thread_id,
        )
        return Reply(text=text)

    async def _reminders(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        text = await self.reminders.command(
            arg,
            person_id=person.person_id,
            platform=msg.platform,
            chat_id=msg.chat_id,
            chat_kind=msg.chat_kind,
            sender_id=msg.sender_id,
        )
        return Reply(text=text)

    async def _timezone(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if not arg:
            current = person.settings.timezone or f"not set (I use {self.settings.default_timezone})"
            return Reply(text=f"Your time zone: {current}. Change it with /timezone Europe/Berlin.")
        try:
            name = zone(arg).key
        except ParseError as exc:
            return Reply(text=str(exc))
        person.settings.timezone = name
        await asyncio.to_thread(self.store.save_person, person)
        return Reply(text=f"Your time zone is now {name}. Reminders you set from now on use it.")

    async def _followups(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        """Opt in or out of follow-ups (core/reminders/followups.py); off cancels pending ones."""
        if chat.kind != "direct":
            return Reply(text="Follow-ups are only for direct chats: send /followups on to me there.")
        choice = arg.strip().lower()
        if choice in ("on", "yes", "start"):
            person.settings.followups = True
            await asyncio.to_thread(self.store.save_person, person)
            return Reply(
                text=(
                    "Follow-ups are on. When you tell me about something with a date (an exam, a trip, an "
                    "appointment, a deadline), I'll check in once: the evening before, or the day after to "
                    "ask how it went. At most one such message a day, only here, never in groups. "
                    "/reminders lists them; /followups off stops them."
                )
            )
        if choice in ("off", "no", "stop"):
            person.settings.followups = False
            await asyncio.to_thread(self.store.save_person, person)
            cancelled = await asyncio.to_thread(self.reminders.stop_followups, person.person_id)
            extra = (
                f" I cancelled {cancelled} planned check-in{'s' if cancelled != 1 else ''}."
                if cancelled
                else ""
            )
            return Reply(text="Follow-ups are off." + extra)
        state = "on" if person.settings.followups else "off"
        return Reply(text=f"Follow-ups are {state}. Use /followups on or /followups off.")

    # -- forgetting ---------------------------------------------------------------------------

    async def _forget(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if not arg:
            return Reply(text="Tell me what to forget: /forget 3 (a number from /memory) or /forget <words>.")
        count = await asyncio.to_thread(self._forget_sync, person, chat, arg)
        if count is None:
            return Reply(text=f"There is no item {arg}. Send /memory to see the numbers.")
        if count == 0:
            return Reply(text=f"I found nothing about “{preview(arg, 60)}” to forget.")
        return Reply(
            text=f"Forgotten: {count} item{'s' if count != 1 else ''}. It's gone from my storage too."
        )

    def _forget_sync(self, person: Person, chat: ChatContext, arg: str) -> int | None:
        store = self.store
        if arg.isdigit():
            items = self.items(person, chat)
            n = int(arg)
            if not 1 <= n <= len(items):
                return None
            chosen = [items[n - 1]]
        else:
            needle = arg.lower()
            scopes = [PRIVATE] if chat.kind == "direct" else [chat.scope]
            chosen = [
                Item(memory=m)
                for m in store.memories_of(person.person_id, current_only=False, visibilities=scopes)
                if needle in m.text.lower()
            ]
            chosen += [
                Item(turn=t)
                for t in store.turns_of(person.person_id, visibilities=scopes)
                if needle in t.text.lower()
            ]
        turns = [i.turn for i in chosen if i.turn is not None]
        memory_ids = [i.memory.id for i in chosen if i.memory is not None]
        own_data.forget(self.store, self.forgetting, person.person_id, turns, memory_ids)
        return len(chosen)

    async def _forget_me(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "direct":
            return Reply(text="To erase everything about you, send /forget_me to me in a direct chat.")
        now = time.monotonic()
        if arg.lower() != "confirm" or self._confirm.get(person.person_id, 0) < now:
            self._confirm[person.person_id] = now + CONFIRM_SECONDS
            return Reply(
                text=(
                    "This erases everything I know about you on every linked account: messages, memories, "
                    "profile and personal model. It can't be undone. To go ahead, send /forget_me confirm "
                    "within 5 minutes."
                ),
                buttons=[Button("Yes, erase everything", "/forget_me confirm")],
            )
        del self._confirm[person.person_id]
        await asyncio.to_thread(self.forgetting.forget_person, person.person_id)
        return Reply(text="Done. I've erased everything about you. If you write again, I start from nothing.")

    # -- export and settings ------------------------------------------------------------------

    async def _export(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "direct":
            return Reply(text="Ask me for /export in a direct chat: it holds your private data.")
        data = await asyncio.to_thread(export_person, self.store, person.person_id)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        body = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()
        return Reply(
            text=f"Everything I keep about you: {len(data['memories'])} memories, {len(data['turns'])} messages.",
            document=Document(f"confidante-export-{stamp}.json", body),
        )

    async def _pause(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        await asyncio.to_thread(own_data.set_paused, self.store, person, True)
        return Reply(text="Paused: I won't remember new messages until you send /resume. I still answer.")

    async def _resume(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        await asyncio.to_thread(own_data.set_paused, self.store, person, False)
        return Reply(text="Resumed: I'll remember what you tell me again.")

    async def _share(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "group":
            return Reply(text="Send /share here in a group to let me use your private profile there.")
        shared = set(person.settings.shared_chats)
        if arg.lower() in ("off", "stop", "revoke"):
            shared.discard(chat.scope)
            text = "Done: in this group I use only what was said here."
        else:
            shared.add(chat.scope)
            text = "Done: in this group I may use your private profile and memories. /share off revokes it."
        person.settings.shared_chats = sorted(shared)
        await asyncio.to_thread(self.store.save_person, person)
        return Reply(text=text)

    async def _context(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "group":
            return Reply(text="/context on|off is for groups.")
        settings = self.store.chat(msg.platform, msg.chat_id)
        if not chat_admin.may_change(msg):
            return Reply(text=chat_admin.ADMINS_ONLY)
        if arg.lower() in ("on", "off"):
            settings.record_context = arg.lower() == "on"
            await asyncio.to_thread(self.store.save_chat, msg.platform, msg.chat_id, settings)
        state = (
            "on: I keep this group's messages as context"
            if settings.record_context
            else "off: I keep only messages addressed to me"
        )
        return Reply(text=f"Group context is {state}.")

    async def _link(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "direct":
            text = "Link accounts in a direct chat with me."
            if arg:
                text += " That code was shown here, so it no longer works: ask for a new one with /link."
            return Reply(text=text)
        ids = self.identities
        if not arg:
            code = ids.issue_code(person.person_id)
            return Reply(
                text=f"Your link code is {code}. Within 10 minutes, send “/link {code}” to me from your other account."
            )
        try:
            kept, merged = await asyncio.to_thread(ids.redeem, arg, msg.platform, msg.sender_id)
        except LinkError as exc:
            return Reply(text=str(exc))
        self.forgetting.accounts_changed(kept, merged)  # merged's rows are kept's now: rebuild
        accounts = await asyncio.to_thread(self.store.identities_of, kept)
        lines = ["Linked. These accounts are now one person to me and share everything I know:"]
        lines += [f"- {i.platform}: {i.platform_user_id}" for i in accounts]
        lines.append("If one of them isn't yours, send /unlink from it, or /forget_me.")
        return Reply(text="\n".join(lines))

    async def _unlink(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if chat.kind != "direct":
            return Reply(text="Send /unlink to me in a direct chat.")
        platform, account = msg.platform, msg.sender_id
        if arg:  # "/unlink slack: T1:U2" separates another of this person's accounts
            accounts = await asyncio.to_thread(self.store.identities_of, person.person_id)
            wanted = re.sub(r"\s*:\s*", ":", arg.strip(), count=1)
            chosen = [i for i in accounts if f"{i.platform}:{i.platform_user_id}" == wanted]
            if not chosen:
                return Reply(text="That isn't one of your accounts. /whoami lists them as platform: id.")
            platform, account = chosen[0].platform, chosen[0].platform_user_id
        new = await asyncio.to_thread(self.identities.unlink, platform, account)
        if new is None:
            return Reply(text="This account isn't joined to another one.")
        self.forgetting.accounts_changed()
        if arg:
            return Reply(text=f"Unlinked {platform}: {account}. It no longer sees anything of yours.")
        return Reply(text="Unlinked. This account is separate now and starts fresh.")

    async def _web(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        settings = self.settings
        if chat.kind != "direct":  # a link shown to a group would open this person's data to it
            return Reply(text="Ask me for /web in a direct chat: the link opens your private data.")
        if settings.web_port <= 0:
            return Reply(text="The web page is turned off on this server.")
        token = self.signin.issue(msg.platform, msg.sender_id)
        minutes = max(1, round(settings.web_link_seconds / 60))
        return Reply(
            text=(
                f"Your private page: {settings.web_base_url}/signin/{token}\n"
                f"The link works once, within {minutes} minutes, and only for you: don't forward it. "
                "Send /web again for a new one."
            )
        )

    async def _stats(self, msg: Incoming, arg: str, person: Person, chat: ChatContext) -> Reply:
        if not self.access.is_admin(msg):
            return Reply(text="/stats is for the assistant's admins.")
        counts = await asyncio.to_thread(self.store.counts)
        lines = ["Counts (no content):"] + [f"- {name}: {n:,}" for name, n in sorted(counts.items())]
        return Reply(text="\n".join(lines))
