"""Installation and OAuth state stores for multi-workspace installs, kept in the data dir.

They are slack_sdk's file stores (one JSON file per workspace, per bot, per installer) with the
files made private to this user: the bot tokens of every workspace live there.
"""

from __future__ import annotations

import os
from pathlib import Path

from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store import FileOAuthStateStore

# What the bot needs, matching infra/slack-manifest.yaml.
BOT_SCOPES = [
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "channels:read",
    "chat:write",
    "commands",
    "files:read",  # voice clips and images people share (bots/slack_media.py)
    "files:write",
    "groups:history",
    "groups:read",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
]


def _private(path: Path) -> None:
    """Owner-only permissions on a directory tree (tokens at rest)."""
    if not path.exists():
        return
    path.chmod(0o700)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            (Path(root) / d).chmod(0o700)
        for f in files:
            (Path(root) / f).chmod(0o600)


class PrivateFileInstallationStore(FileInstallationStore):
    """slack_sdk's FileInstallationStore whose files only this user can read."""

    def __init__(self, base_dir: Path, client_id: str | None = None) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        base_dir.chmod(0o700)
        super().__init__(base_dir=str(base_dir), client_id=client_id)
        self._root = Path(self.base_dir)

    def save(self, installation: Installation) -> None:
        super().save(installation)
        _private(self._root)

    def save_bot(self, bot: Bot) -> None:
        super().save_bot(bot)
        _private(self._root)

    def __repr__(self) -> str:  # never print what is inside
        return f"PrivateFileInstallationStore({self._root})"


def installation_store(data_dir: Path, client_id: str | None) -> PrivateFileInstallationStore:
    return PrivateFileInstallationStore(data_dir / "slack" / "installations", client_id=client_id)


def state_store(data_dir: Path, expiration_seconds: int = 600) -> FileOAuthStateStore:
    base = data_dir / "slack" / "oauth-state"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    return FileOAuthStateStore(expiration_seconds=expiration_seconds, base_dir=str(base))
