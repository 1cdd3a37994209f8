"""`serve()` freezes the start-up heap once the server runs, so the cyclic collector no longer
walks it on every full collection (the notifications event path spent ~20% of its CPU there), and
raises the young generation's threshold so batches of short-lived objects are freed by reference
counting rather than collected over and over."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest

from suuupra_runtime.server import serve
from suuupra_runtime.testing.echo_service import echo_definition
from suuupra_runtime.testing.harness import test_settings


async def test_serve_freezes_what_start_up_left_alive_before_background_work_runs() -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    gc.set_threshold(700, *threshold[1:])
    frozen_when_work_began: list[int] = []
    young_threshold_when_work_began: list[int] = []

    async def first_job() -> None:
        frozen_when_work_began.append(gc.get_freeze_count())
        young_threshold_when_work_began.append(gc.get_threshold()[0])
        # Returning ends serve(): a background task that stops is a failure by design.

    definition = replace(echo_definition(), background=[first_job])
    try:
        with pytest.raises(RuntimeError, match="background task stopped"):
            await serve(definition, test_settings("settle"))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert frozen_when_work_began and frozen_when_work_began[0] > 1000
    assert young_threshold_when_work_began == [50_000]
