"""Fixtures of the feature tests."""

from __future__ import annotations

import pytest

from cryptovol.core.features import engine as engine_module


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compact the per-tick lists after a handful of ticks, so that short
    generated streams exercise the compaction path as well."""
    monkeypatch.setattr(engine_module, "_COMPACT_MIN", 4)
