"""Logs hold neither secrets nor message text: the production logging setup captured while the
real Assistant handles messages, commands and link codes with every platform token set."""

from __future__ import annotations

import logging
import re

import pytest
import structlog

from bots.settings import ChannelSettings
from core.assistant import Assistant
from core.logsafety import REDACTED, install_stdlib_filter, processors
from tests.helpers import RecordingEngine, dm, group, say

TOKENS = {
    "telegram_bot_token": "7311:TG-SECRET-TOKEN-aaaa",
    "telegram_webhook_secret": "TG-WEBHOOK-SECRET-bbbb",
    "slack_bot_token": "xoxb-SLACK-SECRET-cccc",
    "slack_signing_secret": "SLACK-SIGNING-SECRET-dddd",
    "slack_app_token": "xapp-SLACK-APP-SECRET-eeee",
    "slack_client_secret": "SLACK-CLIENT-SECRET-ffff",
    "matrix_access_token": "syt_MATRIX-SECRET-gggg",
    "matrix_password": "MATRIX-PASSWORD-hhhh",
}
TEXTS = ["my diary says LOGTEXT-HERON-1", "in the group LOGTEXT-HERON-2", "LOGTEXT-HERON-3 reply me"]


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _settings(tmp_path, **kw) -> ChannelSettings:
    return ChannelSettings(data_dir=tmp_path / "data", max_new_tokens=4, _env_file=None, **TOKENS, **kw)


async def _traffic(a: Assistant) -> str:
    await say(a, dm(TEXTS[0], person="ann", platform="telegram"))
    await say(a, group(TEXTS[1], "ann", chat_id="-1"))
    await say(a, group(TEXTS[2], "bob", chat_id="-1", addressed=False))
    code = (await say(a, dm("/link", person="ann", platform="telegram"))).split("code is ")[1][:8]
    await say(a, dm(f"/link {code}", person="T1:U1", platform="slack", chat_id="T1:D1"))
    for command in ("/memory", "/export", "/stats", "/forget diary", "/whoami", "/link WRONGCODE"):
        await say(a, dm(command, person="ann", platform="telegram"))
    await say(a, dm("x" * 20_000, person="ann", platform="telegram"))
    return code


def _run_with_production_logging(tmp_path, capsys, store_factory, engine, level: str, content: bool):
    from app.cli import configure_logging

    settings = _settings(tmp_path, log_level=level, log_content=content)
    configure_logging(settings)
    settings.ensure_data_dir()
    a = Assistant(settings, store_factory(settings), engine)
    return a


@pytest.fixture
def make_store(embedder):
    from core.memory.store import Store

    return lambda settings: Store(settings.data_dir / "lancedb", embedder)


@pytest.mark.parametrize(
    "level,content,text_expected",
    [("INFO", False, False), ("DEBUG", False, False), ("INFO", True, False), ("DEBUG", True, True)],
)
async def test_logs_hold_no_secrets_and_text_only_at_debug_with_log_content(
    tmp_path, capsys, caplog, make_store, engine: RecordingEngine, level, content, text_expected
) -> None:
    caplog.set_level(logging.DEBUG)
    a = _run_with_production_logging(tmp_path, capsys, make_store, engine, level, content)
    code = await _traffic(a)
    out = capsys.readouterr()
    logged = out.err + out.out + caplog.text
    assert "message in" in logged or not text_expected
    for name, secret in TOKENS.items():
        assert secret not in logged, f"{name} was logged"
    if not text_expected:  # with content logging on, "/link CODE" is message text like any other
        assert code not in logged, "a live link code was logged"
    found = [t for t in TEXTS if t in logged]
    if text_expected:
        assert found, "positive control: with DEBUG and log_content the text is logged"
    else:
        assert found == [], f"message text logged at {level} with log_content={content}"


def test_guards_scrub_secrets_and_content_whatever_a_module_logs(tmp_path, capsys) -> None:
    settings = _settings(tmp_path, log_level="DEBUG")
    structlog.configure(
        processors=processors(settings),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(),
    )
    log = structlog.get_logger("careless")
    url = f"https://api.telegram.org/bot{TOKENS['telegram_bot_token']}/getMe"
    log.info("request failed", url=url, text=TEXTS[0])
    log.debug("debug with content", text=TEXTS[1])
    try:
        raise RuntimeError(f"auth failed for {TOKENS['slack_bot_token']}")
    except RuntimeError:
        log.exception("slack call failed")
    out = capsys.readouterr().out
    assert REDACTED in out and "request failed" in out and "Traceback" in out
    for secret in TOKENS.values():
        assert secret not in out
    assert TEXTS[0] not in out and TEXTS[1] not in out  # log_content is off


def test_stdlib_logging_is_scrubbed_too(tmp_path) -> None:
    settings = _settings(tmp_path)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    root = logging.getLogger()
    handler = Keep()
    root.addHandler(handler)
    try:
        secret_filter = install_stdlib_filter(settings)
        logging.getLogger("httpx").warning(
            "HTTP Request: POST %s", f"https://x/bot{TOKENS['telegram_bot_token']}/send"
        )
    finally:
        root.removeHandler(handler)
        handler.removeFilter(secret_filter)
    assert records and not [r for r in records if TOKENS["telegram_bot_token"] in r]
    assert re.search(r"bot\[redacted\]/send", records[-1])
