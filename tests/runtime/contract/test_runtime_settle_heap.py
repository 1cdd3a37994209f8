"""`serve()` freezes the start-up heap once the server runs, so the cyclic collector no longer
walks it on every full collection (the notifications event path spent ~20% of its CPU there)."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest

from suuupra_runtime.server import serve
from suuupra_runtime.testing.echo_service import echo_definition
from suuupra_runtime.testing.harness import test_settings


async def test_serve_freezes_what_start_up_left_alive_before_background_work_runs() -> None:
    gc.unfreeze()
    frozen_when_work_began: list[int] = []

    async def first_job() -> None:
        frozen_when_work_began.append(gc.get_freeze_count())
        # Returning ends serve(): a background task that stops is a failure by design.

    definition = replace(echo_definition(), background=[first_job])
    try:
        with pytest.raises(RuntimeError, match="background task stopped"):
            await serve(definition, test_settings("settle"))
    finally:
        gc.unfreeze()
    assert frozen_when_work_began and frozen_when_work_began[0] > 1000
