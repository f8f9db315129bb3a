"""What the Matrix bot keeps on disk between runs, in `<data_dir>/matrix/`.

- credentials.json: homeserver, user id, device id, access token. Reusing the device id keeps
  the same E2E identity (the crypto store under store/ is keyed by it), so people's clients do
  not see a new unverified device at every restart.
- state.json: the sync token, the recently handled event ids (dedupe across restarts) and the
  events accepted but not yet answered (a crash mid-answer answers them at the next start).

Files are written atomically and readable only by the owner: the token is a password.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bots.channel import RecentIds

log = structlog.get_logger(__name__)

HANDLED_KEEP = 5000


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # A torn or hand-edited file must not stop the bot; it logs in / syncs afresh instead.
        log.warning("matrix.state_unreadable", path=str(path), error=str(exc))
        return None


@dataclass
class Credentials:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str


class MatrixState:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.store_dir = self.dir / "store"
        self.store_dir.mkdir(exist_ok=True)
        self._creds_path = self.dir / "credentials.json"
        self._state_path = self.dir / "state.json"
        raw = _read(self._state_path) or {}
        self.next_batch: str | None = raw.get("next_batch")
        self._handled = RecentIds(maxlen=HANDLED_KEEP, initial=raw.get("handled", []))
        self.pending: dict[str, str] = dict(raw.get("pending", {}))  # event id -> room id

    # credentials
    def load_credentials(self) -> Credentials | None:
        raw = _read(self._creds_path)
        if not raw:
            return None
        try:
            return Credentials(**{k: raw[k] for k in ("homeserver", "user_id", "device_id", "access_token")})
        except KeyError:
            return None

    def save_credentials(self, creds: Credentials) -> None:
        _write_private(self._creds_path, creds.__dict__)

    # events
    def seen(self, event_id: str) -> bool:
        return event_id in self._handled or event_id in self.pending

    def accept(self, event_id: str, room_id: str) -> None:
        self.pending[event_id] = room_id
        self.save()

    def done(self, event_id: str) -> None:
        self.pending.pop(event_id, None)
        self._handled.add(event_id)
        self.save()

    def set_token(self, token: str) -> None:
        if token != self.next_batch:
            self.next_batch = token
            self.save()

    def save(self) -> None:
        _write_private(
            self._state_path,
            {"next_batch": self.next_batch, "handled": list(self._handled), "pending": self.pending},
        )
