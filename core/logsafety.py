"""Logging that cannot leak: secrets scrubbed from every event, message text only at DEBUG
and only when `CONFIDANTE_LOG_CONTENT=1`.

The core already logs text only through `Assistant._log_content`; these processors make that
structural for every module and library that logs through structlog or the standard logging
module (a token inside an exception message or a request URL is scrubbed too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

from core.config import Settings

REDACTED = "[redacted]"
CONTENT_KEYS = frozenset({"text", "content", "message_text", "prompt", "messages", "reply"})
MIN_SECRET_CHARS = 6


class ScrubSecrets:
    """A structlog processor replacing any configured secret in any string value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]):
        if not self.secrets:
            return event_dict
        for key, value in list(event_dict.items()):
            event_dict[key] = self.scrub(value)
        return event_dict


class GuardContent:
    """A structlog processor: content-shaped fields survive only at DEBUG with log_content on."""

    def __init__(self, log_content: bool) -> None:
        self.log_content = log_content

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]):
        if self.log_content and method_name == "debug":
            return event_dict
        for key in CONTENT_KEYS & event_dict.keys():
            event_dict[key] = REDACTED
        return event_dict


class SecretFilter(logging.Filter):
    """The same scrubbing for the standard logging module (httpx URLs, library exceptions)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.scrubber = ScrubSecrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.scrubber.secrets:
            message = record.getMessage()
            clean = self.scrubber.scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


class ScrubRendered:
    """Wraps the final renderer and scrubs its output: tracebacks are rendered there."""

    def __init__(self, renderer: Any, secrets: Iterable[str]) -> None:
        self.renderer = renderer
        self.scrubber = ScrubSecrets(secrets)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]):
        return self.scrubber.scrub(self.renderer(logger, method_name, event_dict))


def console_renderer() -> Any:
    """structlog's console output, with tracebacks that show no local variables: a handler's
    locals hold the message being answered, its text and the sender's name."""
    import structlog

    try:
        formatter: Any = structlog.dev.RichTracebackFormatter(show_locals=False)
    except Exception:  # rich missing: plain tracebacks never show locals
        formatter = structlog.dev.plain_traceback
    return structlog.dev.ConsoleRenderer(exception_formatter=formatter)


def processors(settings: Settings, renderer: Any = None) -> list[Any]:
    """structlog's usual chain with the guards in place: pass as `structlog.configure(processors=...)`."""
    import structlog

    secrets = settings.secret_values()
    return [
        GuardContent(settings.log_content),
        ScrubSecrets(secrets),
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.dev.set_exc_info,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
        ScrubRendered(renderer or console_renderer(), secrets),
    ]


def json_renderer() -> Any:
    """One JSON object a line (containers, journald, log shippers), tracebacks as text in it."""
    import structlog

    format_exc = structlog.processors.format_exc_info
    render = structlog.processors.JSONRenderer()

    def renderer(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        return render(logger, method_name, format_exc(logger, method_name, event_dict))

    return renderer


def install_stdlib_filter(settings: Settings) -> SecretFilter:
    """Scrub secrets from every handler of the root logger (call after basicConfig)."""
    secret_filter = SecretFilter(settings.secret_values())
    for handler in logging.getLogger().handlers:
        handler.addFilter(secret_filter)
    return secret_filter
