"""The volatility-spike label (pure; see docs/model_card.md).

For each tick ``t`` of a product, with ``r_i`` the log return of the trade price
between consecutive ticks of the same segment (a segment never spans a
recording gap):

- ``rv_fwd(t)  = sqrt(sum r_i^2 for ticks in (t, t + horizon])``
- ``rv_past(t) = sqrt(sum r_i^2 for ticks in (t - window, t])``
- ``tau(t)``: the ``quantile`` of ``rv_past`` over the ticks in
  ``(t - lookback, t]``: only values known at time ``t``
- ``spike(t) = rv_fwd(t) >= tau(t)`` (and ``rv_fwd(t) > 0``, so a dead-flat
  market is never a spike)

A row gets a label only if its past window and its future window both lie
inside its segment (a window cut by a gap or by the end of the data gives no
label) and ``tau`` rests on enough history: the oldest ``rv_past`` value in the
lookback window is at least ``min_history_s`` old and there are at least
``min_samples`` of them. Gaps inside the lookback window are allowed (the
quantile just sees fewer values), so a recording split into files a minute
apart still gets labels.

``persistence(t) = rv_past(t) / tau(t)`` is the persistence baseline: the
current minute's volatility, measured in units of the threshold.

There is one implementation, and it is incremental: a :class:`Labeller` takes
a product's accepted ticks one at a time, in time order, and hands back each
tick's :class:`Label` as soon as it is final, which is when the first tick
past its horizon arrives or when its segment ends (a gap, a backwards clock
jump, or :meth:`Labeller.close` at the end of the data). Everything but
``rv_fwd`` is known at the tick itself. The live evaluator runs a labeller on
the stream; :func:`compute_labels`, which training uses, runs the same
labeller over a table. Memory per product is bounded by the lookback (the
``rv_past`` values behind ``tau``) and the ticks of the last horizon.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from sortedcontainers import SortedList

LABEL_COLUMNS = ("rv_past", "rv_fwd", "tau", "history_s", "persistence", "spike", "has_label")

#: Why a row has no label (``Label.reason``; empty when it has one).
NO_PAST = "no_past"  # its past window is cut by the start of its segment
NO_HISTORY = "no_history"  # tau rests on too little history (min_history_s, min_samples)
CUT = "cut"  # its future window is cut by a gap, a clock jump or the end of the data
REASONS = (NO_PAST, NO_HISTORY, CUT)

_NAN = math.nan
_COMPACT_MIN = 1024


@dataclass(frozen=True)
class LabelConfig:
    horizon_s: float = 60.0
    window_s: float = 60.0
    lookback_s: float = 1800.0
    quantile: float = 0.90
    min_history_s: float | None = None  # default: lookback_s - window_s
    min_samples: int = 300

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError("quantile must be in (0, 1)")
        if min(self.horizon_s, self.window_s, self.lookback_s) <= 0:
            raise ValueError("horizon, window and lookback must be positive")
        if self.history_s > self.lookback_s:
            raise ValueError("min_history_s cannot exceed lookback_s")

    @property
    def history_s(self) -> float:
        if self.min_history_s is None:
            return max(self.lookback_s - self.window_s, 0.0)
        return self.min_history_s

    @property
    def memory_s(self) -> float:
        """How much event time before a tick its label reads: the lookback of
        ``tau`` plus the past window of its oldest value. A labeller fed the
        ticks from this long before a point labels every later tick as an
        uninterrupted one does."""
        return self.lookback_s + self.window_s

    def to_dict(self) -> dict[str, float | int]:
        out = asdict(self)
        out["min_history_s"] = self.history_s
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> LabelConfig:
        """The config stored in an artifact's metadata (unknown keys ignored)."""
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in fields})


class Label(NamedTuple):
    """The final label of one tick."""

    key: Hashable  # what the caller passed with the tick (a record id, a row position)
    product_id: str
    ts: float  # the tick's time, epoch seconds
    rv_past: float  # NaN when the past window is cut (reason no_past)
    rv_fwd: float  # NaN when the future window is cut (reason cut)
    tau: float  # NaN without enough history
    history_s: float  # age of the oldest value behind tau (NaN without rv_past)
    persistence: float  # rv_past / tau, NaN without enough history
    spike: bool
    has_label: bool
    reason: str  # "" when labelled, else one of REASONS


class _Row(NamedTuple):
    """A tick whose future window is still open."""

    key: Hashable
    ts: float
    index: int  # position in its segment
    rv_past: float
    tau: float
    history_s: float
    enough: bool


class _Product:
    """One product: its current segment's ticks (as far back as a label still
    reads), the rows waiting for their horizon, and the rv_past values of the
    lookback behind tau (which spans segments)."""

    __slots__ = (
        "base",
        "cum",
        "last_log",
        "past_k",
        "pending",
        "seg_start",
        "segment",
        "tau_times",
        "tau_values",
        "tau_window",
        "times",
    )

    def __init__(self) -> None:
        self.segment: Hashable = None
        self.seg_start = 0.0
        self.times: list[float] = []  # from segment index `base` on
        self.cum: list[float] = []  # cumulative sum of r^2 over the segment, per tick
        self.base = 0
        self.last_log = 0.0
        self.past_k = -1  # segment index of the last tick at or before t - window
        self.pending: deque[_Row] = deque()
        self.tau_times: deque[float] = deque()
        self.tau_values: deque[float] = deque()
        self.tau_window = SortedList()

    @property
    def last_ts(self) -> float:
        return self.times[-1]

    def start_segment(self, segment: Hashable, ts: float, log_price: float) -> None:
        self.segment = segment
        self.seg_start = ts
        self.times = [ts]
        self.cum = [0.0]
        self.base = 0
        self.last_log = log_price
        self.past_k = -1

    def clear_tau(self) -> None:
        self.tau_times.clear()
        self.tau_values.clear()
        self.tau_window.clear()

    def compact(self) -> None:
        """Drop ticks no label reads again (amortized O(1))."""
        keep = max(self.past_k, 0)  # before the first full past window: everything
        if self.pending:
            keep = min(keep, self.pending[0].index)
        k = keep - self.base
        if k >= _COMPACT_MIN and k * 2 >= len(self.times):
            del self.times[:k], self.cum[:k]
            self.base += k


class Labeller:
    """Labels of the accepted ticks of any number of products, one tick at a
    time. :meth:`add` returns the labels that tick made final (of earlier
    ticks, oldest first, possibly none); :meth:`close` those still open."""

    def __init__(self, config: LabelConfig | None = None) -> None:
        self.config = cfg = config or LabelConfig()
        self._h = cfg.horizon_s
        self._w = cfg.window_s
        self._lookback = cfg.lookback_s
        self._q = cfg.quantile
        self._history = cfg.history_s
        self._min_samples = cfg.min_samples
        self._products: dict[str, _Product] = {}

    def products(self) -> list[str]:
        return list(self._products)

    def pending(self, product_id: str | None = None) -> int:
        """Rows whose label is not final yet."""
        if product_id is not None:
            st = self._products.get(product_id)
            return len(st.pending) if st else 0
        return sum(len(st.pending) for st in self._products.values())

    def add(self, key: Hashable, product_id: str, ts: float, price: float,
            segment: Hashable = 0) -> list[Label]:
        """One accepted tick at ``ts`` (epoch seconds) with trade ``price`` in
        ``segment`` (its gap-free stretch: the feature engine's segment). A tick
        older than the product's last starts afresh (a backwards clock jump):
        the open rows are cut and tau's history is forgotten."""
        st = self._products.get(product_id)
        out: list[Label] = []
        if st is None:
            st = self._products[product_id] = _Product()
            fresh = True
        elif ts < st.last_ts:
            out = self._end_segment(product_id, st)
            st.clear_tau()
            fresh = True
        elif segment != st.segment:
            out = self._end_segment(product_id, st)
            fresh = True
        else:
            fresh = False
        log_price = math.log(price)
        if fresh:
            st.start_segment(segment, ts, log_price)
        else:
            # rows whose horizon ends before this tick: their future window is complete
            pending, h = st.pending, self._h
            if pending and pending[0].ts + h < ts:
                end = st.cum[-1]
                while pending and pending[0].ts + h < ts:
                    out.append(self._final(product_id, pending.popleft(), st, end))
            r = log_price - st.last_log
            st.last_log = log_price
            st.times.append(ts)
            st.cum.append(st.cum[-1] + r * r)
        index = st.base + len(st.times) - 1
        self._open_row(key, ts, index, st)
        if len(st.times) > _COMPACT_MIN:
            st.compact()
        return out

    def _open_row(self, key: Hashable, ts: float, index: int, st: _Product) -> None:
        w = self._w
        if ts - w < st.seg_start:
            st.pending.append(_Row(key, ts, index, _NAN, _NAN, _NAN, False))
            return
        times, base, k = st.times, st.base, st.past_k
        edge = ts - w
        while times[k + 1 - base] <= edge:
            k += 1
        st.past_k = k
        cum = st.cum
        rv_past = math.sqrt(max(cum[index - base] - cum[k - base], 0.0))
        # tau: the quantile of the rv_past values of (ts - lookback, ts]
        tau_times, tau_values, window = st.tau_times, st.tau_values, st.tau_window
        tau_times.append(ts)
        tau_values.append(rv_past)
        window.add(rv_past)
        expired = ts - self._lookback
        while tau_times[0] <= expired:
            tau_times.popleft()
            window.remove(tau_values.popleft())
        n = len(window)
        pos = self._q * (n - 1)
        lo = int(pos)
        tau = window[lo]
        if lo != pos and lo + 1 < n:
            tau = tau + (window[lo + 1] - tau) * (pos - lo)
        history = ts - tau_times[0]
        enough = history >= self._history and n >= self._min_samples
        st.pending.append(_Row(key, ts, index, rv_past, tau, history, enough))

    def _final(self, product_id: str, row: _Row, st: _Product, end: float | None) -> Label:
        """``row``'s label with the future window summed up to ``end`` (the
        cumulative sum at its last tick), or cut when ``end`` is None."""
        rv_fwd = _NAN if end is None else math.sqrt(max(end - st.cum[row.index - st.base], 0.0))
        rv_past, tau, enough = row.rv_past, row.tau, row.enough
        if not enough:
            reason = NO_PAST if rv_past != rv_past else NO_HISTORY
            return Label(row.key, product_id, row.ts, rv_past, rv_fwd, _NAN, row.history_s,
                         _NAN, False, False, reason)
        persistence = rv_past / tau if tau > 0 else math.inf if rv_past > 0 else 0.0
        if end is None:
            return Label(row.key, product_id, row.ts, rv_past, rv_fwd, tau, row.history_s,
                         persistence, False, False, CUT)
        spike = rv_fwd >= tau and rv_fwd > 0
        return Label(row.key, product_id, row.ts, rv_past, rv_fwd, tau, row.history_s,
                     persistence, spike, True, "")

    def _end_segment(self, product_id: str, st: _Product) -> list[Label]:
        """The open rows of the segment that ends: complete if the segment's
        last tick is past their horizon, else cut."""
        last, end, h = st.last_ts, st.cum[-1], self._h
        out = [self._final(product_id, row, st, end if row.ts + h <= last else None)
               for row in st.pending]
        st.pending.clear()
        return out

    def close(self, product_id: str | None = None) -> list[Label]:
        """End of the data (of one product, or of all): the open rows' labels."""
        names = [product_id] if product_id is not None else list(self._products)
        out: list[Label] = []
        for name in names:
            st = self._products.pop(name, None)
            if st is not None:
                out.extend(self._end_segment(name, st))
        return out


def compute_labels(frame: pd.DataFrame, config: LabelConfig | None = None) -> pd.DataFrame:
    """Label columns (``LABEL_COLUMNS``) aligned to ``frame``'s index, from a
    :class:`Labeller` fed the rows in order.

    ``frame`` needs ``ts`` (epoch seconds), ``price`` and ``segment_id``, and
    optionally ``product_id``; rows must be in time order within each product.
    ``spike`` is 1.0 / 0.0 where ``has_label`` and NaN elsewhere.
    """
    cfg = config or LabelConfig()
    missing = {"ts", "price", "segment_id"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}")
    n = len(frame)
    ts = frame["ts"].to_numpy(dtype=np.float64)
    price = frame["price"].to_numpy(dtype=np.float64)
    segments = frame["segment_id"].to_numpy()
    if "product_id" in frame.columns:
        products = frame["product_id"].astype(str).to_numpy()
        groups = frame.groupby("product_id", sort=False).indices.values()
    else:
        products = np.full(n, "", dtype=object)
        groups = [np.arange(n)] if n else []
    for pos in groups:
        if np.any(np.diff(ts[pos]) < 0):
            raise ValueError("rows must be in time order within each product")
    columns = np.full((n, 6), np.nan)
    has_label = np.zeros(n, dtype=bool)
    labeller = Labeller(cfg)

    def put(labels: list[Label]) -> None:
        for lab in labels:
            i = lab.key
            columns[i] = (lab.rv_past, lab.rv_fwd, lab.tau, lab.history_s, lab.persistence,
                          float(lab.spike) if lab.has_label else _NAN)
            has_label[i] = lab.has_label

    add = labeller.add
    for i, (product, t, p, seg) in enumerate(zip(products.tolist(), ts.tolist(), price.tolist(),
                                                 segments.tolist(), strict=True)):
        finished = add(i, product, t, p, seg)
        if finished:
            put(finished)
    put(labeller.close())
    out = pd.DataFrame(columns, columns=list(LABEL_COLUMNS[:6]), index=frame.index)
    out["has_label"] = has_label
    return out


def label_end(ts: np.ndarray | pd.Series, config: LabelConfig | None = None) -> np.ndarray:
    """The time each row's label stops depending on data (``t + horizon``): what purging uses."""
    cfg = config or LabelConfig()
    return np.asarray(ts, dtype=np.float64) + cfg.horizon_s
