"""`confidante doctor`: check a deployment before (or while) it runs, and say what to fix.

Each check is cheap: settings are parsed, folders probed, the model found without loading it,
the broker pinged, and each configured platform asked one harmless question with its
credentials (Telegram getMe, Slack auth.test, Matrix whoami). Nothing is changed anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from app import health
from app.backup import in_use
from bots.settings import ChannelSettings

TIMEOUT = 5.0


@dataclass
class Finding:
    name: str
    problem: str | None  # None: fine
    detail: str = ""
    fatal: bool = True  # False: worth knowing, nothing is broken


def load_settings() -> tuple[ChannelSettings | None, Finding]:
    try:
        settings = ChannelSettings()
    except ValidationError as exc:
        lines = [f"{_variable(e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        problem = "; ".join(lines) + ". Fix the CONFIDANTE_* variable or confidante.toml line named here."
        return None, Finding("settings", problem)
    except Exception as exc:  # a broken confidante.toml
        return None, Finding("settings", f"cannot read the settings ({exc}): fix confidante.toml")
    return settings, Finding("settings", None, "parsed")


def _variable(loc: tuple) -> str:
    """The environment variable an operator sets, for a settings field's error location."""
    return f"CONFIDANTE_{str(loc[0]).upper()}" if loc else "settings"


def run_checks(settings: ChannelSettings) -> list[Finding]:
    findings = [
        Finding("data dir", health.data_dir(settings), str(settings.data_dir)),
        Finding("model", health.model(settings), settings.model),
        _store(settings),
        Finding("broker", health.broker(settings), settings.broker_url and "redis" or "embedded"),
    ]
    platforms: list[tuple[str, bool, Callable[[ChannelSettings], str | None]]] = [
        ("telegram", settings.telegram.enabled, _telegram),
        ("slack", settings.slack.bot_token is not None, _slack),
        ("matrix", settings.matrix.enabled, _matrix),
    ]
    if not any(enabled for _, enabled, _ in platforms) and not settings.slack.client_id:
        findings.append(
            Finding(
                "platforms",
                "none configured: `confidante run` opens a terminal chat",
                "set TELEGRAM_BOT_TOKEN, SLACK_BOT_TOKEN or CONFIDANTE_MATRIX_* to serve people",
                fatal=False,
            )
        )
    for name, enabled, check in platforms:
        if enabled:
            findings.append(Finding(name, _ask(check, settings), "credentials accepted"))
    return findings


def _store(settings: ChannelSettings) -> Finding:
    path = settings.store_path
    if path is None:  # object storage: opening it and listing its tables is the check
        try:
            import lancedb

            tables = list(lancedb.connect(settings.store_location).table_names())
        except Exception as exc:
            return Finding(
                "store",
                f"LanceDB cannot open {settings.store_location} ({type(exc).__name__}): "
                "check CONFIDANTE_STORE_URI and the storage credentials in the environment",
            )
        return Finding("store", None, f"{len(tables)} tables on {settings.store_location.split('://')[0]}")
    if not path.exists():
        return Finding("store", None, "not created yet: the first start creates it")
    problem = health.store(path)
    if problem:
        return Finding("store", problem)
    try:
        import lancedb

        tables = list(lancedb.connect(str(path)).table_names())
    except Exception as exc:
        return Finding("store", f"LanceDB cannot open {path} ({exc}): restore the data dir from a backup")
    detail = f"{len(tables)} tables"
    if in_use(settings.data_dir):
        detail += "; a chat process is running on it"
    return Finding("store", None, detail)


def _ask(check: Callable[[ChannelSettings], str | None], settings: ChannelSettings) -> str | None:
    try:
        return check(settings)
    except httpx.HTTPError as exc:
        return f"not reachable ({type(exc).__name__}: {exc}): check the URL and this machine's network"


def _telegram(settings: ChannelSettings) -> str | None:
    base = (settings.telegram.api_url or "https://api.telegram.org/bot").rstrip("/")
    token = settings.telegram.bot_token.get_secret_value()
    response = httpx.get(f"{base}{token}/getMe", timeout=TIMEOUT)
    body = _json(response)
    if body.get("ok"):
        return None
    if response.status_code in (401, 404):
        return "Telegram refused the token (Unauthorized): copy TELEGRAM_BOT_TOKEN again from @BotFather"
    return f"Telegram answered {response.status_code}: {body.get('description', 'no description')}"


def _slack(settings: ChannelSettings) -> str | None:
    base = settings.slack.api_url or "https://slack.com/api/"
    token = settings.slack.bot_token.get_secret_value()
    response = httpx.post(
        f"{base.rstrip('/')}/auth.test", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )
    body = _json(response)
    if body.get("ok"):
        problem = None
        if not settings.slack.app_token and not settings.slack.signing_secret:
            problem = "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP events)"
        return problem
    error = body.get("error", f"HTTP {response.status_code}")
    if error in ("invalid_auth", "not_authed", "token_revoked", "account_inactive"):
        return f"Slack refused SLACK_BOT_TOKEN ({error}): copy it again from OAuth & Permissions, or reinstall the app"
    return f"Slack auth.test failed: {error}"


def _matrix(settings: ChannelSettings) -> str | None:
    token = settings.matrix.access_token.get_secret_value() if settings.matrix.access_token else None
    creds = settings.data_dir / "matrix" / "credentials.json"
    if token is None and creds.exists():
        token = json.loads(creds.read_text()).get("access_token")
    if token is None:
        if settings.matrix.password is None:
            return "set CONFIDANTE_MATRIX_PASSWORD (first login) or CONFIDANTE_MATRIX_ACCESS_TOKEN"
        return None  # the first start logs in with the password; logging in here would add a device
    base = settings.matrix.homeserver.rstrip("/")
    response = httpx.get(
        f"{base}/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
    body = _json(response)
    if response.status_code == 200:
        if body.get("user_id") != settings.matrix.user_id:
            return f"the access token belongs to {body.get('user_id')}, not CONFIDANTE_MATRIX_USER_ID={settings.matrix.user_id}"
        return None
    if body.get("errcode") == "M_UNKNOWN_TOKEN":
        return f"the homeserver refused the access token (M_UNKNOWN_TOKEN): delete {creds} to log in again, or set a new CONFIDANTE_MATRIX_ACCESS_TOKEN"
    return f"whoami answered {response.status_code} {body.get('errcode', '')}: check CONFIDANTE_MATRIX_HOMESERVER"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
