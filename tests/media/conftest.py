"""Fixtures for the media tests: tiny generated clips and images, one model load per session."""

from __future__ import annotations

import pytest

from bench.media_data import have_espeak, text_image, voice_note
from tests.matrix.conftest import bots, people, real_assistant, synapse  # noqa: F401
from tests.slack.conftest import fake_slack, make_engine  # noqa: F401 (the Slack tests' fixtures)

SISTER = "My sister moved to Norway last spring."
RECEIPT = ["INVOICE 4721", "Total due 58.40 EUR"]


@pytest.fixture(scope="session")
def sister_note() -> bytes:
    """About three seconds of espeak-ng speech as an OGG/Opus voice note."""
    if not have_espeak():
        pytest.fail("espeak-ng is missing: `make test` installs it (infra/test-services.sh)")
    return voice_note(SISTER).ogg


@pytest.fixture(scope="session")
def receipt_png() -> bytes:
    return text_image(RECEIPT, size=32)
