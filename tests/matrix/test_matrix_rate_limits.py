"""The Matrix channel against a Synapse with its default rate limits, as a real homeserver has
them (the session's server raises them so other tests never trip them by accident)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nio import RoomMemberEvent

from tests.channel_fakes import ScriptedAssistant
from tests.matrix.matrix_helpers import Homeserver, Person, bot_settings, remove, start_bot, unique

pytestmark = pytest.mark.synapse

# Synapse's default rc_joins.local lets an account join 10 rooms at once, then 1 every 10 s.
INVITES = 11


@pytest.fixture(scope="module")
def strict_synapse() -> Iterator[Homeserver]:
    hs = Homeserver(Path(tempfile.mkdtemp(prefix="confidante-synapse-defaults-")), default_rate_limits=True)
    hs.start()
    yield hs
    hs.stop()
    remove(hs.workdir)


@pytest.fixture
async def inviter(strict_synapse: Homeserver) -> AsyncIterator[Person]:
    account = strict_synapse.register(unique("alice"))
    # Alice herself may create and invite as fast as she likes (an admin override lifts her
    # limits); the bot, joining, keeps Synapse's defaults.
    strict_synapse.set_message_ratelimit(account.user_id, per_second=0, burst=0)
    person = Person(strict_synapse, account)
    await person.setup()
    yield person
    await person.client.close()


async def test_joins_refused_for_the_rate_limit_are_retried(
    strict_synapse: Homeserver, inviter: Person, bots: list[Any], tmp_path: Path
) -> None:
    account = strict_synapse.register(unique("confidante"))
    bot = await start_bot(
        ScriptedAssistant(),
        bot_settings(strict_synapse, account, tmp_path / "data", shutdown_grace_seconds=1),
        bots,
    )
    # several invites at once, as when someone adds the bot to a handful of rooms
    rooms = await asyncio.gather(*(inviter.create_room([account.user_id]) for _ in range(INVITES)))

    joined: set[str] = set()

    def bot_joined(room_id: str, event: Any) -> bool:
        if (
            isinstance(event, RoomMemberEvent)
            and event.state_key == account.user_id
            and event.membership == "join"
        ):
            joined.add(room_id)
        return joined >= set(rooms)

    await inviter.wait_for(bot_joined, timeout=90, what=f"the bot in all {INVITES} rooms")
    assert bot.joins_rate_limited >= 1, "the homeserver refused a join for its rate limit, and it was retried"
