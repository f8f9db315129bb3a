"""The inbox shared by several chat processes (core/inbox.py): who is alive, who owns a
message, one claimer per dead run's message, and arrival order across processes."""

from __future__ import annotations

import time

from core.inbox import Inbox, State, key_of
from tests.helpers import dm


def test_a_live_runs_messages_are_left_alone_and_a_stopped_ones_claimed_once(tmp_path):
    path = tmp_path / "inbox.sqlite3"
    a, b, c = Inbox(path), Inbox(path), Inbox(path)
    msg = dm("hello", platform="telegram")
    a.receive(msg)
    assert a.run in b.live_runs() and b.others_alive()
    assert b.unanswered("telegram") == []  # a is alive: it answers its own message
    a.close()  # stopped (or killed: its pid gone): its row goes
    assert a.run not in b.live_runs()
    assert b.claim(key_of(msg), a.run) and not c.claim(key_of(msg), a.run)  # one claimer wins
    entry = b.get(key_of(msg))
    assert entry.run == b.run and entry.late and entry.state is State.RECEIVED
    assert c.unanswered("telegram") == []  # b holds it now
    b.close()
    [taken] = c.unanswered("telegram")
    assert taken.run == c.run and taken.message.text == "hello"
    c.close()


def test_a_run_that_stops_refreshing_its_row_is_dead(tmp_path):
    path = tmp_path / "inbox.sqlite3"
    a, b = Inbox(path), Inbox(path)
    b.dead_after = 0.2
    a.receive(dm("still there?", platform="slack"))
    assert b.unanswered("slack") == []
    time.sleep(0.3)  # no heartbeat from a meanwhile (a hung process, another machine)
    assert [e.message.text for e in b.unanswered("slack")] == ["still there?"]
    a.close()
    b.close()


def test_arrival_order_across_processes_and_who_answered_last(tmp_path):
    path = tmp_path / "inbox.sqlite3"
    a, b = Inbox(path), Inbox(path)
    first, second, third = (dm(f"m{i}", platform="telegram", message_id=str(i)) for i in range(3))
    a.receive(first)
    b.receive(second)
    a.receive(third)
    assert b.open_before(key_of(second)) == [(key_of(first), a.run)]
    assert a.next_up("telegram", set()) == [a.get(key_of(first))]  # third waits behind second
    a.answered(key_of(first))
    assert b.open_before(key_of(second)) == []
    assert b.answered_before(key_of(second)) == a.run  # b reads what a wrote before answering
    assert [e.message.text for e in b.next_up("telegram", set())] == ["m1"]
    assert a.next_up("telegram", set()) == []
    b.answered(key_of(second))
    assert [e.message.text for e in a.next_up("telegram", set())] == ["m2"]
    a.close()
    b.close()
