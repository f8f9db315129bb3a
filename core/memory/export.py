"""Everything kept about one person, as plain data: what /export hands them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from core.memory.store import Store


def export_person(store: Store, person_id: str) -> dict[str, Any]:
    person = store.person(person_id)
    return {
        "person": {
            "person_id": person_id,
            "display_name": person.display_name if person else "",
            "profile": person.profile if person else "",
            "settings": asdict(person.settings) if person else {},
            "adapter_version": person.adapter_version if person else "",
            "created_at": person.created_at if person else None,
        },
        "accounts": [asdict(i) for i in store.identities_of(person_id)],
        "memories": [
            {k: v for k, v in asdict(m).items() if k != "vector"}
            for m in store.memories_of(person_id, current_only=False)
        ],
        "turns": [{k: v for k, v in asdict(t).items() if k != "vector"} for t in store.turns_of(person_id)],
    }
