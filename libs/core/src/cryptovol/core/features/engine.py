"""Incremental, per-product windowed features: O(1) amortized work per tick.

Per product the engine keeps the ticks of the current gap-free *segment* that
can still matter (the longest window plus the tick before it) in flat lists,
with exact integer prefix sums (see :mod:`cryptovol.core.features.exact`) of every
summed quantity. A window is a start index that only moves forward, so a
window sum is one subtraction of two prefix entries; minima and maxima come
from monotonic deques. The lists are compacted in chunks, so memory stays
bounded by the longest window. Beside the segment, each product keeps the
30-minute context of its RV_60 values (:mod:`cryptovol.core.features.context`),
which spans gaps as the label's ``tau`` does; a row is warm-up until both the
300 s window is full and the context is warm.

Tick acceptance (deterministic, in arrival order per product):

1. a ``record_id`` already held in the product's buffer: dropped (``duplicate``);
2. older than the last accepted event time by more than ``jump_s``: a
   backwards clock jump, the state resets and a new segment starts (``jump``);
3. older by more than ``grace_s``: dropped (``late``);
4. older by at most ``grace_s``: accepted, its time clamped to the last event
   time (``out_of_order``);
5. newer by more than ``gap_s``: the state resets, a new segment starts (``gap``);
6. otherwise accepted (``ok``).
"""

from __future__ import annotations

import math
from itertools import islice
from typing import NamedTuple

from cryptovol.core.features.config import FeatureConfig
from cryptovol.core.features.context import LOGSTD_FLOOR, RV_FLOOR, RvContext
from cryptovol.core.features.exact import INV_SCALE, INV_SCALE2, SCALE
from cryptovol.core.features.names import (
    FEATURE_NAMES,
    INDEX,
    LONGEST_WINDOW_S,
    RET_WINDOW_S,
    WINDOWS_S,
)
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import from_micros

NAN = math.nan
_W_US = tuple(w * 1_000_000 for w in WINDOWS_S)
_RET_K = WINDOWS_S.index(RET_WINDOW_S)
_BPV_FACTOR = math.pi / 2
_PARKINSON = 1.0 / (2.0 * math.sqrt(math.log(2.0)))
_W_LONG = _W_US[-1]
_RATIO_30 = math.sqrt(300 / 30)
_RATIO_60 = math.sqrt(300 / 60)
_SQRT2 = math.sqrt(2.0)
_SQRT5 = math.sqrt(5.0)
_RET_US = RET_WINDOW_S * 1_000_000
# positions of the features written by name below (the per-window block is 7 x 3)
(_VR30, _VR60, _DT, _RMEAN, _RSTD, _N, _Q90, _LMEAN, _LSTD, _CNT, _REL30, _REL60, _REL300,
 _Z60, _QEX, _PERS) = (INDEX[k] for k in FEATURE_NAMES[21:])
_N_FEATURES = len(FEATURE_NAMES)
_INF = math.inf
_log = math.log
_sqrt = math.sqrt
_COMPACT_MIN = 1024  # drop consumed list heads in chunks of at least this many

# outcomes of the last update (also the metric reasons of dropped ticks)
OK, OUT_OF_ORDER, GAP, JUMP, FIRST = "ok", "out_of_order", "gap", "jump", "first"
DUPLICATE, LATE, MALFORMED = "duplicate", "late", "malformed"
DROPPED = frozenset({DUPLICATE, LATE, MALFORMED})


class StepResult(NamedTuple):
    """What one accepted tick produced."""

    time_us: int  # event time used by the windows (clamped when out of order)
    warmup: bool
    segment: int  # per-product segment counter since the engine started
    values: tuple[float, ...]  # in FEATURE_NAMES order, NaN where undefined


class _Product:
    """Window state of one product within its current segment."""

    __slots__ = (
        "base",
        "c_bp",
        "c_im",
        "c_nim",
        "c_nsp",
        "c_r",
        "c_rr",
        "c_sp",
        "hi",
        "hi_ptr",
        "ids",
        "last",
        "last_received",
        "lo",
        "lo_ptr",
        "n",
        "prev_q",
        "prices",
        "seg_start",
        "segment",
        "starts",
        "times",
    )

    def __init__(self, segment: int) -> None:
        self.segment = segment
        self.seg_start = 0
        self.last = 0
        self.last_received = 0
        self.n = 0  # segment index of the next tick
        self.base = 0  # segment index of element 0 of the per-tick lists
        self.prev_q = 0  # |r| of the previous tick at scale 2**S (0 if none)
        self.times: list[int] = []
        self.prices: list[float] = []
        self.ids: dict[str, None] = {}  # record ids of the listed ticks, in order
        # prefix sums: element j holds the sum over segment indices < base + j
        self.c_r = [0]  # q(r)                      scale 2**S
        self.c_rr = [0]  # q(r)**2                  scale 2**2S
        self.c_bp = [0]  # q(|r_i|) * q(|r_{i-1}|)   scale 2**2S
        self.c_sp = [0]  # q(spread_bps)             scale 2**S
        self.c_nsp = [0]  # ticks with a spread
        self.c_im = [0]  # q(imbalance)              scale 2**S
        self.c_nim = [0]  # ticks with an imbalance
        self.starts = [0, 0, 0]  # first segment index inside each window
        # Monotonic stacks of (segment index, price), shared by the nested
        # windows: each window's maximum (minimum) is the first entry at or after
        # its pointer.
        self.hi: list[tuple[int, float]] = []
        self.lo: list[tuple[int, float]] = []
        self.hi_ptr = [0, 0, 0]
        self.lo_ptr = [0, 0, 0]

    def compact(self) -> None:
        """Drop list heads no window can reach again (amortized O(1))."""
        # keep the tick before the longest window: reference of its log return
        k = self.starts[-1] - 1 - self.base
        if k >= _COMPACT_MIN and k * 2 >= len(self.times):
            ids = self.ids
            for rid in list(islice(ids, k)):
                del ids[rid]
            for seq in (self.times, self.prices, self.c_r, self.c_rr, self.c_bp,
                        self.c_sp, self.c_nsp, self.c_im, self.c_nim):
                del seq[:k]
            self.base += k
        for stack, ptr in ((self.hi, self.hi_ptr), (self.lo, self.lo_ptr)):
            d = ptr[-1]  # the longest window's pointer is the smallest
            if d >= _COMPACT_MIN and d * 2 >= len(stack):
                del stack[:d]
                for k in range(len(ptr)):
                    ptr[k] -= d


class FeatureEngine:
    """Windowed features for any number of products, one tick at a time.

    ``step(tick)`` returns what the tick produced (:class:`StepResult`), or
    ``None`` when the tick is dropped; ``last_outcome`` says what happened
    (``first``, ``ok``, ``gap``, ``jump``, ``out_of_order``, or the drop reasons
    ``duplicate``, ``late``, ``malformed``).
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._gap = self.config.gap_us
        self._grace = self.config.grace_us
        self._jump = self.config.jump_us
        self._products: dict[str, _Product] = {}
        self._contexts: dict[str, RvContext] = {}  # span gaps; cleared by a clock jump
        self._segments: dict[str, int] = {}
        self.last_outcome: str = OK

    # -- inspection -------------------------------------------------------------
    def products(self) -> list[str]:
        return list(self._products)

    def state(self, product_id: str) -> dict[str, object] | None:
        """A summary of one product's state (for health endpoints and tests)."""
        st = self._products.get(product_id)
        if st is None:
            return None
        return {
            "segment": st.segment,
            "segment_start": from_micros(st.seg_start),
            "last_event_time": from_micros(st.last),
            "ticks_in_segment": st.n,
            "ticks_buffered": len(st.times),
            "warm": st.last - st.seg_start >= _W_US[-1]
            and self._context(product_id).warm(st.last),
            "context_values": len(self._context(product_id)),
        }

    def _context(self, product_id: str) -> RvContext:
        ctx = self._contexts.get(product_id)
        if ctx is None:
            ctx = self._contexts[product_id] = RvContext()
        return ctx

    def reset(self, product_id: str | None = None) -> None:
        """Forget one product's windows (or every product's); its next tick
        starts a new segment."""
        if product_id is None:
            self._products.clear()
            self._contexts.clear()
        else:
            self._products.pop(product_id, None)
            self._contexts.pop(product_id, None)

    # -- updates ----------------------------------------------------------------
    def _new_segment(self, product_id: str) -> _Product:
        seg = self._segments.get(product_id, -1) + 1
        self._segments[product_id] = seg
        st = _Product(seg)
        self._products[product_id] = st
        return st

    def step(self, tick: Tick) -> StepResult | None:
        """Feed one tick. Returns ``None`` when the tick is dropped (see
        ``last_outcome``)."""
        record_id, product_id, t, received, price, bid, ask, bid_qty, ask_qty = tick[:9]
        if not 0 < price < math.inf:
            self.last_outcome = MALFORMED
            return None
        st = self._products.get(product_id)
        if st is None:
            st = self._new_segment(product_id)
            outcome = FIRST
        else:
            last = st.last
            if t < last - self._grace:
                # A backwards clock jump is older than the jump limit yet freshly
                # received; a redelivered old tick was received long ago, too.
                if t < last - self._jump and received is not None \
                        and received >= st.last_received:
                    st = self._new_segment(product_id)
                    self._contexts.pop(product_id, None)  # it holds the future now
                    outcome = JUMP
                else:
                    self.last_outcome = DUPLICATE if record_id in st.ids else LATE
                    return None
            elif record_id in st.ids:
                self.last_outcome = DUPLICATE
                return None
            elif t < last:
                t = last
                outcome = OUT_OF_ORDER
            elif t - last > self._gap:
                st = self._new_segment(product_id)
                outcome = GAP
            else:
                outcome = OK
        self.last_outcome = outcome

        # ---- append the tick -------------------------------------------------
        i = st.n
        times, prices = st.times, st.prices
        if i:
            dt_prev = (t - st.last) / 1e6
            q = int(_log(price / prices[-1]) * SCALE)
            qa = q if q >= 0 else -q
            bp = qa * st.prev_q
        else:
            st.seg_start = t
            dt_prev = NAN
            q = qa = bp = 0
        st.prev_q = qa
        st.last = t
        if received is not None:
            st.last_received = received
        st.n = i + 1
        times.append(t)
        prices.append(price)
        st.ids[record_id] = None
        c_r, c_rr, c_bp = st.c_r, st.c_rr, st.c_bp
        c_r.append(c_r[-1] + q)
        c_rr.append(c_rr[-1] + q * q)
        c_bp.append(c_bp[-1] + bp)
        c_sp, c_nsp, c_im, c_nim = st.c_sp, st.c_nsp, st.c_im, st.c_nim
        if bid is not None and ask is not None and 0 < bid < _INF and 0 < ask < _INF:
            c_sp.append(c_sp[-1] + int((ask - bid) / ((ask + bid) * 0.5) * 1e4 * SCALE))
            c_nsp.append(c_nsp[-1] + 1)
        else:
            c_sp.append(c_sp[-1])
            c_nsp.append(c_nsp[-1])
        if bid_qty is not None and ask_qty is not None and bid_qty >= 0 and ask_qty >= 0 \
                and 0 < bid_qty + ask_qty < _INF:
            c_im.append(c_im[-1] + int((bid_qty - ask_qty) / (bid_qty + ask_qty) * SCALE))
            c_nim.append(c_nim[-1] + 1)
        else:
            c_im.append(c_im[-1])
            c_nim.append(c_nim[-1])
        entry = (i, price)
        hi, lo = st.hi, st.lo
        while hi and hi[-1][1] <= price:
            hi.pop()
        hi.append(entry)
        while lo and lo[-1][1] >= price:
            lo.pop()
        lo.append(entry)
        top_hi, top_lo = len(hi) - 1, len(lo) - 1

        # ---- windows ---------------------------------------------------------
        base = st.base
        starts, hi_ptr, lo_ptr = st.starts, st.hi_ptr, st.lo_ptr
        r_n, rr_n, bp_n = c_r[-1], c_rr[-1], c_bp[-1]
        sp_n, nsp_n, im_n, nim_n = c_sp[-1], c_nsp[-1], c_im[-1], c_nim[-1]
        out = [NAN] * _N_FEATURES
        for k in (0, 1, 2):
            s = starts[k]
            edge = t - _W_US[k]
            while times[s - base] <= edge:
                s += 1
            starts[k] = s
            j = s - base
            h = hi_ptr[k]
            if h > top_hi:
                h = top_hi
            while hi[h][0] < s:
                h += 1
            hi_ptr[k] = h
            m = lo_ptr[k]
            if m > top_lo:
                m = top_lo
            while lo[m][0] < s:
                m += 1
            lo_ptr[k] = m
            rr = rr_n - c_rr[j]
            out[k] = _sqrt(float(rr) * INV_SCALE2)
            out[3 + k] = _sqrt(_BPV_FACTOR * float(bp_n - c_bp[j]) * INV_SCALE2)
            out[6 + k] = _log(price / prices[j - 1 if s else 0])
            out[9 + k] = _log(hi[h][1] / lo[m][1]) * _PARKINSON
            n = i + 1 - s
            out[12 + k] = float(n)
            ns = nsp_n - c_nsp[j]
            if ns:
                out[15 + k] = float(sp_n - c_sp[j]) * INV_SCALE / ns
            ni = nim_n - c_nim[j]
            if ni:
                out[18 + k] = float(im_n - c_im[j]) * INV_SCALE / ni
            if k == _RET_K:
                n_ret = n if s else n - 1  # the segment's first tick has no return
                out[_N] = float(n_ret)
                if n_ret:
                    sr = r_n - c_r[j]
                    out[_RMEAN] = float(sr) * INV_SCALE / n_ret
                    if n_ret > 1:
                        num = n_ret * rr - sr * sr
                        out[_RSTD] = _sqrt(float(num) / (n_ret * (n_ret - 1)) * INV_SCALE2)
        rv30, rv60, rv_long = out[0], out[1], out[2]
        if rv_long > 0:
            out[_VR30] = rv30 / rv_long * _RATIO_30
            out[_VR60] = rv60 / rv_long * _RATIO_60
        out[_DT] = dt_prev
        if starts[2] - base > _COMPACT_MIN or hi_ptr[2] > _COMPACT_MIN or lo_ptr[2] > _COMPACT_MIN:
            st.compact()

        # ---- the 30-minute context of RV_60 ----------------------------------
        ctx = self._contexts.get(product_id)
        if ctx is None:
            ctx = self._contexts[product_id] = RvContext()
        ctx.expire(t)
        if t - st.seg_start >= _RET_US:  # the 60 s window lies inside the segment
            ctx.add(t, rv60)
        n_ctx = len(ctx)
        out[_CNT] = float(n_ctx)
        if n_ctx:
            tau = ctx.quantile()
            lmean = ctx.log_mean()
            tau_f = tau if tau > RV_FLOOR else RV_FLOOR
            log_tau = _log(tau_f)
            out[_Q90] = tau
            out[_LMEAN] = lmean
            out[_REL30] = _log(max(rv30 * _SQRT2, RV_FLOOR)) - log_tau
            out[_REL60] = _log(max(rv60, RV_FLOOR)) - log_tau
            out[_REL300] = _log(max(rv_long / _SQRT5, RV_FLOOR)) - log_tau
            out[_QEX] = log_tau - lmean
            out[_PERS] = rv60 / tau_f
            if n_ctx > 1:
                lstd = ctx.log_std()
                out[_LSTD] = lstd
                if lstd > LOGSTD_FLOOR:
                    out[_Z60] = (_log(max(rv60, RV_FLOOR)) - lmean) / lstd
        warmup = t - st.seg_start < _W_LONG or not ctx.warm(t)
        return StepResult(t, warmup, st.segment, tuple(out))


__all__ = [
    "DROPPED",
    "DUPLICATE",
    "FIRST",
    "GAP",
    "JUMP",
    "LATE",
    "LONGEST_WINDOW_S",
    "MALFORMED",
    "OK",
    "OUT_OF_ORDER",
    "FeatureEngine",
    "StepResult",
]
