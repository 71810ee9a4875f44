"""The model card's tables are the committed artifacts' numbers."""

from __future__ import annotations

from pathlib import Path

from cryptovol_training.card import block, render

REPO = Path(__file__).resolve().parents[3]


def test_model_card_tables_are_rendered_from_the_committed_artifacts() -> None:
    rendered = render(REPO / "models" / "artifacts")
    assert "**Locked final test" in rendered and "**Walk-forward**" in rendered
    assert block(REPO / "docs" / "model_card.md") == rendered, (
        "docs/model_card.md is stale: run "
        "`cryptovol-train card --models models/artifacts --write docs/model_card.md`")
