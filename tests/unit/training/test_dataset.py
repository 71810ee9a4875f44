"""The training table: causal features, consistent labels, stable fingerprint."""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptovol.core.features import FEATURE_NAMES, features_frame
from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_training.dataset import RowPolicy, build_dataset

REPO = Path(__file__).resolve().parents[3]
RECORDINGS = REPO / "data" / "coinbase-ticker"
# three consecutive files of 2025-12-06, about 30 minutes with two recording gaps
FILES = [
    "ticks_BTCUSD_20251206_011247.ndjson.gz",
    "ticks_BTCUSD_20251206_013105.ndjson.gz",
    "ticks_BTCUSD_20251206_013602.ndjson.gz",
]
SHORT = LabelConfig(lookback_s=600.0, min_samples=100)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rec")
    for name in FILES:
        shutil.copy(RECORDINGS / name, folder / name)
    return folder


def test_features_at_t_use_no_tick_after_t() -> None:
    """The row of tick i is the same whether the ticks after i exist or not."""
    recs = open_recordings([RECORDINGS / FILES[0], RECORDINGS / FILES[1]])
    ticks = list(islice(read_ticks(recs), 4000))
    full = features_frame(ticks)
    cols = ["ts", "warmup", "segment_id", *FEATURE_NAMES]
    for cut in (1, 250, 1999, 3680, 3999):
        prefix = features_frame(ticks[: cut + 1])
        pd.testing.assert_frame_equal(prefix[cols].iloc[-1:].reset_index(drop=True),
                                      full[cols].iloc[cut:cut + 1].reset_index(drop=True))
    # ... and changing every later tick's price changes nothing up to i
    cut = 2500
    shocked = [t._replace(price=t.price * 1.05) if i > cut else t
               for i, t in enumerate(ticks)]
    again = features_frame(shocked)
    pd.testing.assert_frame_equal(again[cols].iloc[: cut + 1], full[cols].iloc[: cut + 1])
    assert not np.allclose(again["rv_30s"].iloc[cut + 1:cut + 50],
                           full["rv_30s"].iloc[cut + 1:cut + 50])


def test_eval_rows_are_labelled_past_warmup_and_train_rows_agree(small_dir: Path) -> None:
    ds = build_dataset([small_dir], SHORT, progress=False)
    ev, tr = ds.eval_rows, ds.train_rows
    assert len(ev) > 500 and len(tr) > len(ev)  # past warm-up: after 29 min of context
    assert not ev["warmup"].any() and ev["has_label"].all()
    assert ev["ts"].is_monotonic_increasing and tr["ts"].is_monotonic_increasing
    assert set(ev["record_id"]) <= set(tr["record_id"])
    both = ev.set_index("record_id")
    np.testing.assert_array_equal(both["spike"], both["train_spike"])  # one label, not two
    assert ds.summary()["rows"] == len(ev)
    strict = build_dataset([small_dir], SHORT, progress=False,
                           policy=RowPolicy(train_history_s=1e9, train_on_warmup=False))
    assert len(strict.train_rows) == len(strict.eval_rows)


def test_fingerprint_depends_on_data_and_label(small_dir: Path) -> None:
    a = build_dataset([small_dir], SHORT, progress=False)
    b = build_dataset([small_dir], SHORT, progress=False)
    c = build_dataset([small_dir], LabelConfig(lookback_s=600.0, quantile=0.8),
                      progress=False)
    d = build_dataset([small_dir / FILES[0]], SHORT, progress=False)
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


def test_no_recordings_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no recordings"):
        build_dataset([tmp_path], progress=False)
