"""Joining accounts with one-time codes, attacked: guessing, replay, expiry, codes shown in a
group, and /unlink that must leave nothing of the other accounts reachable."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from core.assistant import Assistant
from core.identity import _CODE_ALPHABET, CODE_LENGTH, MAX_LINK_ATTEMPTS
from core.memory.records import PRIVATE, Memory, chat_scope
from tests.helpers import RecordingEngine, dm, group, say

ATTACKS: dict[str, int] = {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(assistant: Assistant) -> Clock:
    c = Clock()
    assistant.identities.clock = c
    assistant.access.clock = c
    return c


def _count(name: str, n: int = 1) -> None:
    ATTACKS[name] = ATTACKS.get(name, 0) + n


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nlink attacks:", json.dumps(ATTACKS))


def _random_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))


async def _code(
    assistant: Assistant, person: str, platform: str = "telegram", chat: str | None = None
) -> str:
    text = await say(assistant, dm("/link", person=person, platform=platform, chat_id=chat or f"dm-{person}"))
    match = re.search(r"code is ([A-Z0-9]{8})", text)
    assert match, text
    return match.group(1)


def _slack(text: str, user: str = "T1:U1") -> object:
    return dm(text, person=user, platform="slack", chat_id=f"T1:D-{user}")


async def _seed_alice(assistant: Assistant) -> None:
    """Alice on Telegram: a private secret, a group item, and a private memory."""
    await say(
        assistant, dm("my bank pin is 4471-KESTREL", person="alice", platform="telegram", chat_id="dm-alice")
    )
    await say(assistant, group("the team offsite is in Porto", "alice", chat_id="-100"))
    pid = assistant.store.person_for("telegram", "alice")
    assistant.store.save_memories(
        [
            Memory(pid, "fact", "Alice's passport number is PX-99-OSPREY", "alice-m1"),
            Memory(
                pid, "fact", "Team offsite in Porto", "alice-m2", visibility=chat_scope("telegram", "-100")
            ),
        ]
    )


async def test_link_merges_accounts_with_scopes_intact(assistant: Assistant) -> None:
    await _seed_alice(assistant)
    await say(assistant, _slack("on slack I mostly talk about the BRIGHTWATER launch"))
    slack_before = assistant.store.person_for("slack", "T1:U1")
    code = await _code(assistant, "alice")
    reply = await say(assistant, _slack(f"/link {code.lower()[:4]} {code.lower()[4:]}"))
    assert reply.startswith("Linked"), reply
    assert "telegram: alice" in reply and "slack: T1:U1" in reply
    pid = assistant.store.person_for("telegram", "alice")
    assert assistant.store.person_for("slack", "T1:U1") == pid
    assert assistant.store.person(slack_before) is None
    scopes = {t.text: t.visibility for t in assistant.store.turns_of(pid)}
    assert scopes["my bank pin is 4471-KESTREL"] == PRIVATE
    assert scopes["the team offsite is in Porto"] == chat_scope("telegram", "-100")
    assert scopes["on slack I mostly talk about the BRIGHTWATER launch"] == PRIVATE
    memories = {m.id: m.visibility for m in assistant.store.memories_of(pid)}
    assert memories == {"alice-m1": PRIVATE, "alice-m2": chat_scope("telegram", "-100")}
    whoami = await say(assistant, _slack("/whoami"))
    assert "telegram: alice" in whoami and "slack: T1:U1" in whoami


async def test_one_account_guessing_is_cut_off(assistant: Assistant, clock: Clock) -> None:
    await _seed_alice(assistant)
    real = await _code(assistant, "alice")
    guesses = [_random_code() for _ in range(200)]
    guesses.insert(MAX_LINK_ATTEMPTS + 1, real)  # the right code, once the limit is reached
    for guess in guesses:
        clock.now += 5  # slow enough that the message rate limit never steps in
        reply = await say(assistant, _slack(f"/link {guess}", user="T6:EVE"))
        _count("single-account guesses")
        assert not reply.startswith("Linked")
    assert assistant.store.person_for("slack", "T6:EVE") != assistant.store.person_for("telegram", "alice")
    assert len(assistant.store.identities_of(assistant.store.person_for("telegram", "alice"))) == 1


async def test_many_accounts_guessing_pauses_linking_and_voids_codes(
    assistant: Assistant, clock: Clock
) -> None:
    await _seed_alice(assistant)
    real = await _code(assistant, "alice")
    limit = assistant.settings.link_failures_global
    evaluated = 0
    for account in range(120):
        for _ in range(MAX_LINK_ATTEMPTS):
            clock.now += 0.5
            guess = real if account == 40 else _random_code()
            reply = await say(assistant, _slack(f"/link {guess}", user=f"T6:BOT{account}"))
            _count("many-account guesses")
            assert not reply.startswith("Linked"), "a guessed code joined someone else's history"
            evaluated += "not valid" in reply
    assert evaluated <= limit, "more wrong codes were checked than the global limit allows"
    alice = assistant.store.person_for("telegram", "alice")
    assert len(assistant.store.identities_of(alice)) == 1
    assert assistant.identities.live_codes() == 0
    # Positive control: after the pause, Alice links her own account normally.
    clock.now += 601
    code = await _code(assistant, "alice")
    assert (await say(assistant, _slack(f"/link {code}"))).startswith("Linked")


async def test_guessing_rate_is_bounded_over_hours(assistant: Assistant, clock: Clock) -> None:
    """Evaluated wrong guesses stay within the global limit per window, whatever the accounts."""
    ids = assistant.identities
    limit = assistant.settings.link_failures_global
    evaluated = 0
    for step in range(6 * 120):  # six 10-minute windows, a guess every 5 seconds from a new account
        clock.now += 5
        try:
            ids.redeem(_random_code(), "slack", f"T6:FARM{step}")
        except Exception as exc:
            evaluated += "not valid" in str(exc)
        _count("farm guesses over an hour")
    assert evaluated <= limit * 6 + limit
    space = len(_CODE_ALPHABET) ** CODE_LENGTH
    per_year = limit * 6 * 24 * 365
    assert per_year * 100 / space < 1e-4  # 100 live codes, a year of guessing


async def test_codes_expire_and_work_once(assistant: Assistant, clock: Clock) -> None:
    await _seed_alice(assistant)
    code = await _code(assistant, "alice")
    clock.now += 601
    assert "expired" in await say(assistant, _slack(f"/link {code}"))
    _count("expired code")
    code = await _code(assistant, "alice")
    assert (await say(assistant, _slack(f"/link {code}"))).startswith("Linked")
    replay = await say(assistant, _slack(f"/link {code}", user="T6:EVE"))
    _count("replayed code")
    assert "not valid" in replay
    assert assistant.store.person_for("slack", "T6:EVE") != assistant.store.person_for("telegram", "alice")


async def test_new_code_voids_the_old_one(assistant: Assistant) -> None:
    await _seed_alice(assistant)
    old = await _code(assistant, "alice")
    await _code(assistant, "alice")
    assert "not valid" in await say(assistant, _slack(f"/link {old}", user="T6:EVE"))
    _count("superseded code")


@pytest.mark.parametrize("addressed", [True, False])
async def test_code_shown_in_a_group_stops_working(assistant: Assistant, addressed: bool) -> None:
    await _seed_alice(assistant)
    code = await _code(assistant, "alice")
    reply = await say(assistant, group(f"/link {code}", "alice", chat_id="-100", addressed=addressed))
    if addressed:
        assert "no longer works" in reply
    stolen = await say(assistant, dm(f"/link {code}", person="mallory", platform="telegram", chat_id="dm-m"))
    _count("code replayed from a group")
    assert "not valid" in stolen
    assert len(assistant.store.identities_of(assistant.store.person_for("telegram", "alice"))) == 1


async def test_code_of_an_erased_person_is_dead(assistant: Assistant) -> None:
    await _seed_alice(assistant)
    code = await _code(assistant, "alice")
    await say(assistant, dm("/forget_me", person="alice", platform="telegram", chat_id="dm-alice"))
    await say(assistant, dm("/forget_me confirm", person="alice", platform="telegram", chat_id="dm-alice"))
    reply = await say(assistant, _slack(f"/link {code}"))
    _count("code of an erased person")
    assert not reply.startswith("Linked")


SECRETS = ["4471-KESTREL", "PX-99-OSPREY", "BRIGHTWATER", "Porto"]


async def _linked(assistant: Assistant) -> str:
    await _seed_alice(assistant)
    await say(assistant, _slack("on slack I mostly talk about the BRIGHTWATER launch"))
    code = await _code(assistant, "alice")
    assert (await say(assistant, _slack(f"/link {code}"))).startswith("Linked")
    return assistant.store.person_for("telegram", "alice")


async def _nothing_of_alice_reachable(
    assistant: Assistant, engine: RecordingEngine, make, platform: str, user: str
) -> None:
    """Everything the separated account can ask for shows none of the joined person's data."""
    pid = assistant.store.person_for(platform, user)
    assert len(assistant.store.identities_of(pid)) == 1
    assert assistant.store.turns_of(pid) == [] and assistant.store.memories_of(pid, current_only=False) == []
    for ask in ["/memory", "/memory history", "/whoami", "what is my bank pin and passport number?"]:
        text = await say(assistant, make(ask))
        _count("probe from an unlinked account")
        for secret in SECRETS:
            assert secret not in text
    reply = await assistant.handle(make("/export"))
    export = reply.document.content.decode()
    for secret in SECRETS:
        assert secret not in export
    prompt = json.dumps(engine.prompts[-1])
    for secret in SECRETS:
        assert secret not in prompt
    # Asked in the group where Alice shared her profile: still nothing of hers.
    group_reply = await say(
        assistant, group("what is my passport number?", user, chat_id="-100", platform=platform)
    )
    assert all(s not in group_reply for s in SECRETS[:3])
    assert all(s not in json.dumps(engine.prompts[-1]) for s in SECRETS[:3])


async def test_unlink_from_the_issuing_account(assistant: Assistant, engine: RecordingEngine) -> None:
    pid = await _linked(assistant)
    tg = lambda text: dm(text, person="alice", platform="telegram", chat_id="dm-alice")  # noqa: E731
    await say(assistant, group("/share here", "alice", chat_id="-100"))
    assert (await say(assistant, tg("/unlink"))).startswith("Unlinked")
    assert assistant.store.person_for("telegram", "alice") != pid
    assert assistant.store.person_for("slack", "T1:U1") == pid
    await _nothing_of_alice_reachable(assistant, engine, tg, "telegram", "alice")
    assert any("4471-KESTREL" in t.text for t in assistant.store.turns_of(pid)), "the rest keeps its data"


async def test_unlink_from_the_redeeming_account(assistant: Assistant, engine: RecordingEngine) -> None:
    pid = await _linked(assistant)
    assert (await say(assistant, _slack("/unlink"))).startswith("Unlinked")
    assert assistant.store.person_for("slack", "T1:U1") != pid
    await _nothing_of_alice_reachable(assistant, engine, _slack, "slack", "T1:U1")


async def test_owner_unlinks_an_account_that_is_not_theirs(assistant: Assistant) -> None:
    pid = await _linked(assistant)
    reply = await say(
        assistant, dm("/unlink slack: T1:U1", person="alice", platform="telegram", chat_id="dm-alice")
    )
    assert reply.startswith("Unlinked slack: T1:U1"), reply
    assert assistant.store.person_for("slack", "T1:U1") != pid
    other = await say(assistant, _slack("/unlink telegram: alice"))
    _count("unlink of someone else's account")
    assert "isn't one of your accounts" in other
    assert assistant.store.person_for("telegram", "alice") == pid


async def test_account_facts_stay_out_of_groups(assistant: Assistant) -> None:
    await _linked(assistant)
    for command in ["/whoami", "/unlink", "/link", "/export", "/forget_me"]:
        reply = await say(assistant, group(command, "alice", chat_id="-100"))
        _count("account command in a group")
        assert "T1:U1" not in reply and "KESTREL" not in reply
        assert reply.document is None if hasattr(reply, "document") else True
    assert len(assistant.store.identities_of(assistant.store.person_for("telegram", "alice"))) == 2
