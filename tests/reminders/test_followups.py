"""Follow-ups without a platform: what is proposed from which turns, and the dispatcher's daily
cap (one unasked message per person per local day) on a fast clock with the real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core.memory.records import Turn, chat_scope
from core.reminders.dispatch import Channel, Clock, Dispatcher
from core.reminders.followups import FollowUps
from core.reminders.store import FOLLOWUP, ReminderStore

BERLIN = ZoneInfo("Europe/Berlin")
WED = datetime(2026, 12, 2, 10, 0, tzinfo=BERLIN)
ANCHOR = datetime.now(UTC)  # the real instant the test clocks read WED


def real(at: datetime) -> datetime:
    """The real timestamp a message said at clock time `at` carries."""
    return ANCHOR + (at - WED)


def turn(text: str, *, at: datetime = WED, chat: str = "dm-1", group: bool = False, n: int = 0) -> Turn:
    return Turn(
        person_id="p1",
        platform="telegram",
        chat_id=chat,
        message_id=f"m{n}-{hash(text) & 0xFFFF}",
        role="user",
        text=text,
        ts=real(at),
        visibility=chat_scope("telegram", chat) if group else "private",
    )


def planner(store: ReminderStore) -> FollowUps:
    return FollowUps(store, Clock(1.0, WED.astimezone(UTC), ANCHOR), "UTC")


def bot_chat(platform: str, chat_id: str) -> bool:
    return chat_id.startswith("dm-")


def test_one_follow_up_per_event_only_from_fresh_direct_chats_with_the_bot():
    store = ReminderStore()
    follow = planner(store)
    added = follow.propose("p1", "Europe/Berlin", [turn("My JLPT exam is on Sunday", n=1)], bot_chat)
    assert len(added) == 1
    r = added[0]
    assert (r.kind, r.chat_id, r.chat_kind, r.tz) == (FOLLOWUP, "dm-1", "direct", "Europe/Berlin")
    assert r.next_due == datetime(2026, 12, 5, 19, 0, tzinfo=BERLIN)
    assert r.what == "Your JLPT exam is on Sunday 6 Dec — good luck! Want to go over anything tonight?"
    # said again (another message, another day's wording): the same event, no second follow-up
    again = [turn("reminder to self: my JLPT exam is on Sun 6 Dec", n=2)]
    assert follow.propose("p1", "Europe/Berlin", again, bot_chat) == []
    # a group, an imported chat the bot never answered in, a week-old message, a check-in already past
    assert (
        follow.propose("p1", "Europe/Berlin", [turn("my exam is on Sunday", group=True, chat="g")], bot_chat)
        == []
    )
    assert (
        follow.propose("p1", "Europe/Berlin", [turn("my exam is on Sunday", chat="export-9")], bot_chat) == []
    )
    old = turn("my interview is on Friday", at=WED - timedelta(days=5), n=3)
    assert follow.propose("p1", "Europe/Berlin", [old], bot_chat) == []
    tomorrow = turn("my interview is tomorrow", n=4)  # said now, on a clock that reads 21:00
    late = FollowUps(store, Clock(1.0, WED.replace(hour=21).astimezone(UTC), ANCHOR), "UTC")
    assert late.propose("p1", "Europe/Berlin", [tomorrow], bot_chat) == []  # 19:00 tonight has passed
    assert [x.what for x in store.active_of("p1")] == [r.what]


def test_cancelling_stops_it_and_a_cancelled_event_is_not_proposed_again():
    store = ReminderStore()
    follow = planner(store)
    [r] = follow.propose("p1", "Europe/Berlin", [turn("I fly to Lisbon on the 20th", n=1)], bot_chat)
    assert store.cancel(r.id)
    assert follow.propose("p1", "Europe/Berlin", [turn("I fly to Lisbon on the 20th!", n=2)], bot_chat) == []
    [s] = follow.propose("p1", "Europe/Berlin", [turn("I fly to Oslo on the 22nd", n=3)], bot_chat)
    assert store.cancel_followups("p1") == 1 and store.get(s.id).state == "cancelled"
    [t] = follow.propose("p1", "Europe/Berlin", [turn("my thesis is due on the 23rd", n=4)], bot_chat)
    assert store.cancel_followups_from([t.source]) == 1


async def test_two_follow_ups_due_the_same_day_are_one_message_that_day(tmp_path):
    """Two 'how did it go' check-ins due Sat 18:00: one goes, the other moves to Sun 18:00; an
    exam's evening-before check-in pushed onto the exam's own day is dropped. A day is 2 s."""
    store = ReminderStore(tmp_path / "r.sqlite3")
    follow = planner(store)
    said = [
        turn("My dentist appointment is on Friday", n=1),
        turn("I have a physio session on Friday", n=2),
        turn("My JLPT exam is on Sunday", n=3),
    ]
    added = follow.propose("p1", "Europe/Berlin", said, bot_chat)
    assert sorted(r.next_due.astimezone(BERLIN).strftime("%a %H:%M") for r in added) == [
        "Sat 18:00",
        "Sat 18:00",
        "Sat 19:00",
    ]
    sent: list[tuple[datetime, str]] = []
    dues: list[str] = []
    clock = Clock(43_200.0, datetime(2026, 12, 5, 17, 59, 50, tzinfo=BERLIN).astimezone(UTC))

    async def send(chat_id, text, *, key, thread_id, buttons):
        sent.append((clock.now().astimezone(BERLIN), text))
        dues.append(datetime.fromisoformat(key.split("@", 1)[1]).astimezone(BERLIN).strftime("%a %H:%M"))
        assert [b.command for b in buttons] == ["/followups off"]
        return f"m{len(sent)}"

    dispatcher = Dispatcher(store, tmp_path / "lock", clock=clock, idle_check_seconds=0.2)
    dispatcher.attach("telegram", Channel(send))
    for _ in range(60):  # until Sunday evening has passed on the fast clock (~3 s)
        await asyncio.sleep(0.1)
        if clock.now() > datetime(2026, 12, 6, 18, 30, tzinfo=BERLIN):
            break
    await dispatcher.detach("telegram")
    days = [when.strftime("%a") for when, _ in sent]
    assert days == ["Sat", "Sun"], sent
    assert all(text.startswith("💬 How did your") for _, text in sent)
    assert dues == ["Sat 18:00", "Sun 18:00"]  # the occurrences sent: the second moved a day
    assert all(when.hour in (18, 19) for when, _ in sent)  # sent then (a ms here is 43 s there)
    exam = next(r for r in added if "JLPT" in r.what)
    assert store.get(exam.id).state == "dropped"


def test_at_most_ten_pending_follow_ups_per_person():
    store = ReminderStore()
    cities = [
        "Oslo",
        "Rome",
        "Paris",
        "Madrid",
        "Vienna",
        "Prague",
        "Lisbon",
        "Athens",
        "Dublin",
        "Warsaw",
        "Riga",
    ]
    said = [turn(f"I fly to {city} on the {10 + i}th", n=i) for i, city in enumerate(cities)]
    assert len(planner(store).propose("p1", "Europe/Berlin", said, bot_chat)) == 10


def test_the_gate_drops_a_check_in_that_no_longer_fits_and_any_outside_a_direct_chat():
    from core.reminders.followups import gate

    store = ReminderStore()
    [exam] = planner(store).propose("p1", "Europe/Berlin", [turn("My JLPT exam is on Sunday", n=1)], bot_chat)
    on_time = datetime(2026, 12, 5, 19, 0, 1, tzinfo=BERLIN)
    assert gate(store, exam, on_time).action == "send"
    # the bot was down from Saturday evening to Sunday noon: "good luck tonight" is too late
    assert gate(store, exam, datetime(2026, 12, 6, 12, 0, tzinfo=BERLIN)).action == "drop"
    in_group = store.add(
        person_id="p1",
        platform="telegram",
        chat_id="g",
        chat_kind="group",
        setter="x",
        what="w",
        tz="Europe/Berlin",
        first=exam.next_due,
        kind=FOLLOWUP,
        event_key="exam|x|2026-12-06",
        event_day="2026-12-06",
    )
    assert gate(store, in_group, on_time).action == "drop"
