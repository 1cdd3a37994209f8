"""Fixtures for the notes service's integration and contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.notes.tests.harness import NotesHarness, notes_harness


@pytest.fixture
async def notes(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[NotesHarness]:
    async with notes_harness(postgres_server_url, fresh_nats_url) as harness:
        yield harness
