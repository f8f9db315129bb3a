"""People, their accounts on each platform, and per-chat settings: few rows, read on every
message, so they are kept in memory and written through."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from core.memory import filters as f
from core.memory.records import Identity, Person
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    SCHEMAS,
    ChatSettings,
    _utc,
)


class PeopleAndChats(StoreBase):
    # -- people and identities ----------------------------------------------------------------

    def person(self, person_id: str) -> Person | None:
        return self._people.get(person_id)

    def people(self) -> list[Person]:
        return list(self._people.values())

    def refresh_person(self, person_id: str) -> Person | None:
        """Re-read one person's row: another process (a worker) may have changed it."""
        rows = self._rows("people", f.eq("person_id", person_id), limit=1)
        if not rows:
            self._people.pop(person_id, None)
            return None
        person = self._person_from_row(rows[0])
        self._people[person_id] = person
        return person

    def refresh_people(self) -> list[Person]:
        """Re-read every person (a long-running worker sees people created after it started)."""
        people = {
            row["person_id"]: self._person_from_row(row)
            for row in self._tables["people"].to_arrow().to_pylist()
        }
        self._people = people
        return list(people.values())

    def save_person(self, person: Person) -> None:
        row = {
            "person_id": person.person_id,
            "display_name": person.display_name,
            "settings": person.settings.to_json(),
            "adapter_version": person.adapter_version,
            "profile": person.profile,
            "created_at": person.created_at,
        }
        with self._write_lock:
            table = self._tables["people"]
            table.merge_insert("person_id").when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["people"])
            )
            self._people[person.person_id] = person

    def delete_person_row(self, person_id: str) -> None:
        """Drop the people row only (its data was moved to another person)."""
        with self._write_lock:
            self._tables["people"].delete(f.eq("person_id", person_id))
            self._people.pop(person_id, None)

    def person_for(self, platform: str, platform_user_id: str) -> str | None:
        return self._identities.get((platform, platform_user_id))

    def link_identity(self, platform: str, platform_user_id: str, person_id: str) -> None:
        row = {
            "key": f"{platform}\x1f{platform_user_id}",
            "platform": platform,
            "platform_user_id": platform_user_id,
            "person_id": person_id,
            "linked_at": datetime.now(UTC),
        }
        with self._write_lock:
            self._tables["identities"].merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["identities"])
            )
            self._identities[(platform, platform_user_id)] = person_id

    def unlink_identity(self, platform: str, platform_user_id: str) -> None:
        with self._write_lock:
            self._tables["identities"].delete(
                f.all_of(f.eq("platform", platform), f.eq("platform_user_id", platform_user_id))
            )
            self._identities.pop((platform, platform_user_id), None)

    def identities_of(self, person_id: str) -> list[Identity]:
        rows = self._rows("identities", f.eq("person_id", person_id))
        return [
            Identity(r["platform"], r["platform_user_id"], r["person_id"], _utc(r["linked_at"])) for r in rows
        ]

    # -- chats ------------------------------------------------------------------------------

    def chat(self, platform: str, chat_id: str) -> ChatSettings:
        return self._chats.get((platform, chat_id), ChatSettings())

    def save_chat(self, platform: str, chat_id: str, chat: ChatSettings) -> None:
        row = {
            "key": f"{platform}\x1f{chat_id}",
            "platform": platform,
            "chat_id": chat_id,
            "record_context": chat.record_context,
            "active": chat.active,
        }
        with self._write_lock:
            self._tables["chats"].merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["chats"])
            )
            self._chats[(platform, chat_id)] = chat
