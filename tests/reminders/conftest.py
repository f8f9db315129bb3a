"""Reminder tests: the fake Bot API (tests/telegram) and a test clock set just before the due
time, so a reminder is due seconds after it is set, at real speed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.telegram.conftest import fake_api  # noqa: F401 - the fixture, shared

BERLIN = "Europe/Berlin"


def clock_at(local: str, tz: str = BERLIN, *, speed: float = 1.0) -> dict:
    """Settings for a reminder clock that reads `local` (wall time in `tz`) right now."""
    from zoneinfo import ZoneInfo

    origin = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    anchor = datetime.now(UTC)
    return {
        "reminder_clock_origin": origin,
        "reminder_clock_anchor": anchor,
        "reminder_clock_speed": speed,
        "default_timezone": tz,
    }


def real_time_of(settings, local: str, tz: str = BERLIN) -> float:
    """The real (epoch) second at which the test clock reads `local`."""
    from zoneinfo import ZoneInfo

    target = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    fake = (target - settings.reminder_clock_origin) / settings.reminder_clock_speed
    return (settings.reminder_clock_anchor + fake).timestamp() if isinstance(fake, timedelta) else 0.0


from tests.slack.conftest import fake_slack  # noqa: E402, F401 - the fixture, shared
