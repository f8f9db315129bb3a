"""`confidante doctor` against a broken setting, bad credentials and a good deployment, with each
platform's check answered by a local server speaking that platform's documented responses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from app.cli import app
from tests.ops.conftest import free_port
from tests.slack.fake_slack import FakeSlack
from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI

SLACK_TOKEN = "xoxb-1-doctor-test"
MATRIX_TOKEN = "syt_doctor_test_token"
MATRIX_USER = "@confidante:localhost"


@pytest.fixture
async def fake_matrix():
    """whoami as the Matrix client-server API documents it (200 with user_id, or 401 M_UNKNOWN_TOKEN)."""
    seen: list[str] = []

    async def whoami(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {MATRIX_TOKEN}":
            body = {
                "errcode": "M_UNKNOWN_TOKEN",
                "error": "Invalid access token passed.",
                "soft_logout": False,
            }
            return web.json_response(body, status=401)
        return web.json_response({"user_id": MATRIX_USER, "device_id": "DOCTOR", "is_guest": False})

    server = web.Application()
    server.router.add_get("/_matrix/client/v3/account/whoami", whoami)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def fakes(fake_matrix):
    telegram, slack = FakeBotAPI(), FakeSlack()
    slack.add_team(SLACK_TOKEN, "T0DOCTOR")
    await telegram.start()
    await slack.start()
    yield telegram, slack, fake_matrix
    await telegram.stop()
    await slack.stop()


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: None for k in os.environ if k.startswith(("CONFIDANTE_", "SLACK_", "TELEGRAM_"))}
    env.update(CONFIDANTE_DATA_DIR=str(tmp_path / "data"), CONFIDANTE_CONFIG=str(tmp_path / "none.toml"))
    env.update(values)
    return env


async def _doctor(env: dict[str, str]):
    # the checks call the fakes, which answer on this event loop: run the command beside it
    return await asyncio.to_thread(CliRunner().invoke, app, ["doctor"], env=env)


async def test_good_deployment_passes_and_asks_each_platform_once(fakes, tmp_path) -> None:
    telegram, slack, (matrix_url, matrix_seen) = fakes
    env = _env(
        tmp_path,
        TELEGRAM_BOT_TOKEN=TOKEN,
        CONFIDANTE_TELEGRAM_API_URL=telegram.base_url,
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_APP_TOKEN="xapp-1-doctor",
        CONFIDANTE_SLACK_API_URL=slack.api_url,
        CONFIDANTE_MATRIX_HOMESERVER=matrix_url,
        CONFIDANTE_MATRIX_USER_ID=MATRIX_USER,
        CONFIDANTE_MATRIX_ACCESS_TOKEN=MATRIX_TOKEN,
    )
    result = await _doctor(env)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for name in ("settings", "data dir", "model", "store", "broker", "telegram", "slack", "matrix"):
        assert f"ok {name}:" in output, name
    assert [c.method for c in telegram.calls] == ["getMe"]
    assert [c.method for c in slack.calls] == ["auth.test"]
    assert matrix_seen == [f"Bearer {MATRIX_TOKEN}"]
    for secret in (TOKEN, SLACK_TOKEN, MATRIX_TOKEN):
        assert secret not in result.output


async def test_bad_credentials_each_say_what_to_fix(fakes, tmp_path) -> None:
    telegram, slack, (matrix_url, _) = fakes
    env = _env(
        tmp_path,
        TELEGRAM_BOT_TOKEN="123456:wrong-token-for-the-fake",
        CONFIDANTE_TELEGRAM_API_URL=telegram.base_url,
        SLACK_BOT_TOKEN="xoxb-revoked",
        SLACK_APP_TOKEN="xapp-1-doctor",
        CONFIDANTE_SLACK_API_URL=slack.api_url,
        CONFIDANTE_MATRIX_HOMESERVER=matrix_url,
        CONFIDANTE_MATRIX_USER_ID=MATRIX_USER,
        CONFIDANTE_MATRIX_ACCESS_TOKEN="syt_stale",
    )
    result = await _doctor(env)
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "FIX telegram: Telegram refused the token" in output and "@BotFather" in output
    assert "FIX slack: Slack refused SLACK_BOT_TOKEN (invalid_auth)" in output
    assert "FIX matrix: the homeserver refused the access token (M_UNKNOWN_TOKEN)" in output
    assert "ok store" in output  # only what is broken is flagged


async def test_broken_setting_and_unreachable_broker_fail_with_the_variable_named(tmp_path) -> None:
    result = await _doctor(_env(tmp_path, CONFIDANTE_MAX_NEW_TOKENS="lots"))
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "FIX settings: CONFIDANTE_MAX_NEW_TOKENS" in output and "'lots'" in output

    down = f"redis://127.0.0.1:{free_port()}/0"
    result = await _doctor(_env(tmp_path, CONFIDANTE_BROKER_URL=down))
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "FIX broker: the broker redis://127.0.0.1" in output and "does not answer" in output

    (tmp_path / "data").write_text("a file where the data dir should be")
    result = await _doctor(_env(tmp_path))
    assert result.exit_code == 1 and "is a file, not a directory" in result.output


async def test_remote_generation_server_is_checked_instead_of_a_local_model(tmp_path) -> None:
    """With CONFIDANTE_GENERATION_URL the model check asks the server's /v1/models (the OpenAI
    list-models response) and loads nothing; a server that is down is named with what to set."""
    keys: list[str] = []

    async def models(request: web.Request) -> web.Response:
        keys.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer sk-doctor":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "base", "object": "model"}]})

    server = web.Application()
    server.router.add_get("/v1/models", models)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/v1"
        good = _env(tmp_path, CONFIDANTE_GENERATION_URL=url, CONFIDANTE_GENERATION_API_KEY="sk-doctor")
        result = await _doctor(good)
        assert result.exit_code == 0, result.output
        result = await _doctor({**good, "CONFIDANTE_GENERATION_API_KEY": "sk-wrong"})
        assert result.exit_code == 1 and "CONFIDANTE_GENERATION_API_KEY" in " ".join(result.output.split())
        assert keys == ["Bearer sk-doctor", "Bearer sk-wrong"]
    finally:
        await runner.cleanup()
    down = _env(tmp_path, CONFIDANTE_GENERATION_URL=f"http://127.0.0.1:{free_port()}/v1")
    result = await _doctor(down)
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "does not answer" in output and "CONFIDANTE_GENERATION_URL" in output
