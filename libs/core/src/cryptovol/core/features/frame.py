"""The offline path: ticks to a feature table with the streaming engine itself."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cryptovol.core.features.config import FeatureConfig
from cryptovol.core.features.engine import FeatureEngine
from cryptovol.core.features.names import FEATURE_NAMES
from cryptovol.core.ticks import Tick

#: Columns of :func:`features_frame` before the features themselves.
FRAME_COLUMNS: tuple[str, ...] = (
    "record_id", "product_id", "event_time", "ts", "price", "warmup", "segment_id",
)


def features_frame(
    ticks: Iterable[Tick],
    config: FeatureConfig | None = None,
    engine: FeatureEngine | None = None,
) -> pd.DataFrame:
    """One row per accepted tick, in input order.

    ``event_time`` (UTC) and ``ts`` (epoch seconds) are the time the windows
    used: the tick's event time, clamped to the product's last event time for
    a tick that arrived slightly out of order. ``segment_id`` numbers the
    product's gap-free stretches from 0. Dropped ticks (duplicate, late) have
    no row. Features are float64, NaN where undefined.
    """
    engine = engine or FeatureEngine(config)
    step = engine.step
    rids: list[str] = []
    products: list[str] = []
    times: list[int] = []
    prices: list[float] = []
    warm: list[bool] = []
    segs: list[int] = []
    values: list[tuple[float, ...]] = []
    for tick in ticks:
        res = step(tick)
        if res is None:
            continue
        rids.append(tick.record_id)
        products.append(tick.product_id)
        times.append(res.time_us)
        prices.append(tick.price)
        warm.append(res.warmup)
        segs.append(res.segment)
        values.append(res.values)
    us = np.asarray(times, dtype=np.int64)
    matrix = np.asarray(values, dtype=np.float64).reshape(len(values), len(FEATURE_NAMES))
    frame = pd.DataFrame({
        "record_id": pd.Series(rids, dtype=object),
        "product_id": pd.Series(products, dtype=object),
        "event_time": pd.to_datetime(us, unit="us", utc=True),
        "ts": us / 1e6,
        "price": np.asarray(prices, dtype=np.float64),
        "warmup": np.asarray(warm, dtype=bool),
        "segment_id": np.asarray(segs, dtype=np.int64),
    })
    features = pd.DataFrame(matrix, columns=list(FEATURE_NAMES))
    return pd.concat([frame, features], axis=1)
