"""The exact k-th largest value of each row of a NumPy array: the kWTA threshold on the CPU (Xiao et al., ICLR 2020:
kWTA keeps the entries ``>=`` the k-th largest of their group; :mod:`kwta_robust.layers`).

Two algorithms, the same values (``torch.topk(k).values.amin()``, NaN included: NaN ranks largest, so a row holding
one gets NaN):

* **introselect** — ``np.partition`` along the axis (values only; ``torch.topk`` moves value-index pairs), on the
  entries' bits read as integers where the row's k-th largest has its sign bit clear (the same order there; NumPy's
  integer partition is faster: :func:`introselect_kth_largest`), on the floats in the other rows.
* **sampled bracket** (Floyd & Rivest, "Expected time bounds for selection", CACM 18(3), 1975) for wide rows: a
  fixed sample of ``s`` entries of each row (:func:`sample_columns`) is sorted, and two of its order statistics, a
  few standard deviations either side of the expected rank of the k-th largest ``t_k``, bracket it:
  ``low <= t_k < high``. One pass counts each row's entries ``>= high`` (``above``) and marks the candidates
  ``low <= x < high``; where ``above < k <= above + candidates`` the row's ``t_k`` is its ``(k - above)``-th largest
  candidate, exactly, whatever the sample (ties and infinities included: the bracket's ends are entries of the
  row). The candidates of all rows are sorted at once in a ``[rows, width]`` array padded with ``-inf``. Rows the
  bracket misses (or that hold too many candidates) fall back to introselect.

Which one runs is a fact of the host (:data:`SAMPLED_BRACKET`, :func:`partition_is_slow`): NumPy >= 2.0 runs
``np.partition`` through x86-simd-sort, whose AVX-512 build stores with ``vpcompressd``'s memory form, microcoded and
slow on AMD Zen 4 (family 19h; AMD's software optimisation guide for Zen 4, section 2.11.2, advises against that
form; OpenJDK disables its AVX-512 sort on that family for the same reason). There: 3.9 ms for the
small CNN's first kWTA layer (256 rows of 3,136 float32), about 5 ns an entry, while the library's sorting networks
sort rows of up to 512 entries at 1-3 ns an entry; the bracket gives the slow routine nothing on the rows it catches
and the fast one a few hundred candidates a row: 1.6 ms on that layer (1.6-2.6x faster on the small CNN's kWTA
layers, batches 40-512, k/N 0.05-0.5). Elsewhere introselect is the faster one: on an Intel Xeon with AVX-512 it
takes about 2 ns an entry and the bracket 2-3x as long (``benchmarks/RESULTS.md``, "kWTA layer"). On a Zen 4 host,
rows narrower than :data:`MIN_SAMPLED_WIDTH`, and batches of fewer than :data:`MIN_SAMPLED_ROWS` rows, keep
introselect (the bracket's fixed costs exceed its savings there).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from kwta_robust.errors import ConfigError

MIN_SAMPLED_WIDTH = 1024  # narrower rows: introselect
MIN_SAMPLED_ROWS = 16  # fewer rows: introselect (fixed per-call costs)
SAMPLE_SIZE = 256  # doubled while the expected candidates exceed CANDIDATES_TARGET
CANDIDATES_TARGET = 384  # expected candidates a row; a sorting-network row (512) holds the rows' maximum
SORT_WIDTH = 512  # widest candidate row sorted; rows with more fall back unless more than 1/8 of rows do
SPREAD = 2.5  # the bracket's half-width in standard deviations of the sample rank
BLOCK_ENTRIES = 400_000  # rows are bracketed in blocks of about this many entries (1.6 MB of float32)
ZEN4_FAMILY = 0x19  # AMD family 19h: Zen 3 (no AVX-512, so NumPy's AVX2 build) and Zen 4


def _first_cpu_fields(lines: Iterable[str]) -> dict[str, str]:
    """The ``key: value`` fields of the first processor's block of ``/proc/cpuinfo``-formatted ``lines`` (stops at
    the blank line that ends it: on a many-core host the kernel need not generate the other blocks)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def partition_is_slow(cpuinfo: str | None = None, features: Mapping[str, bool] | None = None) -> bool:
    """Whether ``np.partition`` runs x86-simd-sort's AVX-512 build on an AMD family-19h CPU (Zen 4), where its
    memory-destination compress-stores are microcoded (module docstring): ``True`` only when NumPy dispatches to
    AVX-512 (``AVX512_SKX`` in its CPU features; ``NPY_DISABLE_CPU_FEATURES`` can turn that off) and the first CPU of
    ``cpuinfo`` (the text of Linux's ``/proc/cpuinfo``; read when ``None``, empty where there is none) is an
    ``AuthenticAMD`` of family 19h. ``features`` defaults to NumPy's runtime CPU features."""
    if features is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:  # a NumPy without that table: no AVX-512 dispatch known
            features = {}
    if not features.get("AVX512_SKX", False):
        return False
    if cpuinfo is not None:
        fields = _first_cpu_fields(cpuinfo.splitlines())
    else:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as lines:
                fields = _first_cpu_fields(lines)
        except OSError:
            fields = {}
    try:
        family = int(fields.get("cpu family", ""))
    except ValueError:
        return False
    return fields.get("vendor_id") == "AuthenticAMD" and family == ZEN4_FAMILY


#: whether :func:`kth_largest` takes the sampled bracket on wide groups on this host (:func:`partition_is_slow`)
SAMPLED_BRACKET: bool = partition_is_slow()


def introselect_kth_largest(values: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The k-th largest entry along ``axis`` (kept as a size-1 axis) by ``np.partition``; NaN where the row holds
    one (NaN ranks largest, so it is among the top k).

    The partition runs on the entries' bits read as signed integers of the same width (a view, no conversion):
    NumPy's integer partition is 1.6-1.8x faster than its float one on an Intel Xeon with AVX-512 (no NaN
    handling), and for entries whose sign bit is clear (``+0`` to ``+inf``, and NaN above them) the integer order
    is the float order, while every entry with the sign bit set (negatives, ``-0``, negative NaN) reads as a
    negative integer, below them all. So where a row's k-th largest integer is ``>= 0``, its float is the row's
    k-th largest value (any entry ranked lower by the integers is ``<= 0`` as a float, hence ``<=`` it); rows
    where it is negative take the float partition (:func:`_float_introselect`), and rows holding a NaN (of either
    sign; one global ``max`` finds whether any does) get NaN. From ``k >= n / 2`` the float partition runs alone: on
    zero-mean pre-activations (what a kWTA replacing a ReLU ranks) most rows' k-th largest is then negative, and the
    integer pass before it was wasted (256 x 4096 float32: 2.0 ms against 1.6 ms at k/n 0.5, 3.1 against 1.7 at
    0.9; 0.9-1.0 against 1.3-1.4 at 0.1)."""
    n = values.shape[axis]
    axis = axis % values.ndim
    int_type = {2: np.int16, 4: np.int32, 8: np.int64}.get(values.itemsize)  # a view of the same width
    if int_type is None or values.size == 0 or 2 * k >= n:
        return _float_introselect(values, k, axis)
    kth = [slice(None)] * values.ndim
    kth[axis] = slice(n - k, n - k + 1)
    keys = np.partition(values.view(int_type), n - k, axis=axis)[tuple(kth)]
    out = keys.view(values.dtype)
    negative = keys < 0
    if negative.any():  # the float partition for those rows: their k-th largest is <= -0
        rows = np.moveaxis(negative, axis, -1)[..., 0]
        np.moveaxis(out, axis, -1)[rows] = _float_introselect(np.moveaxis(values, axis, -1)[rows], k, -1)
    if np.isnan(values.max()):
        out = np.where(np.isnan(values).any(axis=axis, keepdims=True), values.dtype.type(np.nan), out)
    return out


def _float_introselect(values: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The k-th largest entry along ``axis`` (kept as a size-1 axis) by ``np.partition`` on the floats; NaN where
    the top k hold one (NaN sorts last, so: where the row holds one)."""
    n = values.shape[axis]
    axis = axis % values.ndim
    part = np.partition(values, n - k, axis=axis)
    kth = [slice(None)] * part.ndim
    kth[axis] = slice(n - k, n - k + 1)
    top = list(kth)
    top[axis] = slice(n - k, n)
    has_nan = np.isnan(part[tuple(top)]).any(axis=axis, keepdims=True)
    return np.where(has_nan, part.dtype.type(np.nan), part[tuple(kth)])


def sample_columns(n: int, s: int) -> np.ndarray:
    """``s`` distinct columns of ``range(n)`` spread over the row: ``i · p mod n`` with ``p`` the first integer
    ``>= max(1, floor(0.618 n))`` coprime to ``n`` (a Weyl sequence, not a stride: a channels-last volume's channel
    count divides ``n``, so every channel is sampled, not one in a stride's period)."""
    p = max(1, int(n * 0.6180339887))
    while math.gcd(p, n) != 1:
        p += 1
    return (np.arange(s, dtype=np.intp) * p) % n


def _bracket_ranks(n: int, k: int) -> tuple[int, int, int]:
    """Sample size ``s`` and the ascending ranks in the sorted sample of the bracket's ends (``-1``: no lower end,
    ``s``: no upper end)."""
    q = k / n
    s = SAMPLE_SIZE
    while True:
        half = SPREAD * math.sqrt(s * q * (1 - q)) + 1
        lo, hi = int(math.floor(s * (1 - q) - half)), int(math.ceil(s * (1 - q) + half))
        lo, hi = max(lo, -1), min(hi, s)
        if (hi - lo) * n / s <= CANDIDATES_TARGET or 8 * s > n:  # a sample of at most a quarter of the row
            return s, lo, hi
        s *= 2


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """Number of ``True`` per row of a ``[rows, n]`` bool array (summed as bytes: 4x faster than ``count_nonzero``)."""
    narrow = np.uint16 if mask.shape[1] < 2**16 else np.intp
    return mask.view(np.uint8).sum(axis=1, dtype=narrow).astype(np.intp)


def sampled_kth_largest(rows: np.ndarray, k: int) -> np.ndarray:
    """The k-th largest entry of each row of a C-contiguous ``[R, n]`` float array (``1 <= k <= n``), shape
    ``[R]``, by the sampled bracket (module docstring)."""
    count, n = rows.shape
    s, lo, hi = _bracket_ranks(n, k)
    inf = rows.dtype.type(np.inf)
    sample = np.sort(rows[:, sample_columns(n, s)], axis=1)  # NaN sorts last
    low = sample[:, lo:lo + 1] if lo >= 0 else np.full((count, 1), -inf, rows.dtype)
    high = sample[:, hi:hi + 1] if hi < s else np.full((count, 1), inf, rows.dtype)
    above = np.greater_equal(rows, high)
    candidate = np.less(rows, low)
    np.logical_not(candidate, out=candidate)  # x >= low, and NaN: a row's NaN is always a candidate
    np.logical_xor(candidate, above, out=candidate)  # high >= low, so x >= high implies x >= low
    n_above, n_candidates = _row_counts(above), _row_counts(candidate)
    rank = k - n_above  # of the k-th largest among the row's candidates
    caught = (rank >= 1) & (rank <= n_candidates)
    wide = caught & (n_candidates > SORT_WIDTH)
    if 8 * int(wide.sum()) <= count:
        caught &= ~wide
    missed = ~caught
    if missed.any():
        candidate[missed] = False
        n_candidates[missed] = 0
    width = max(int(n_candidates.max()), 1)
    where = np.flatnonzero(candidate)
    padded = np.full(count * width, -inf, rows.dtype)
    first = np.cumsum(n_candidates) - n_candidates
    slot = np.repeat(np.arange(count) * width - first, n_candidates)
    slot += np.arange(where.size)
    padded[slot] = rows.ravel()[where]
    padded = padded.reshape(count, width)
    padded.sort(axis=1)  # -inf padding first, NaN last
    kth = padded[np.arange(count), width - np.clip(rank, 1, width)]
    kth = np.where(np.isnan(padded[:, -1]), rows.dtype.type(np.nan), kth)
    if missed.any():
        kth[missed] = introselect_kth_largest(rows[missed], k, axis=1)[:, 0]
    return kth


def _check_selection(values: np.ndarray, k: int, axis: int) -> None:
    """``values`` is a floating-point array with ``axis`` among its axes and ``1 <= k <=`` its length there."""
    if values.dtype.kind != "f":
        raise ConfigError(f"kth_largest: values must be a floating-point array, got dtype {values.dtype}; "
                          "convert it with .astype(np.float32)")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -values.ndim <= axis < values.ndim:
        raise ConfigError(f"kth_largest: axis must be an integer in [{-values.ndim}, {values.ndim - 1}] for "
                          f"an array of shape {values.shape}, got {axis!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= values.shape[axis]:
        raise ConfigError(f"kth_largest: k must be an integer in [1, {values.shape[axis]}] (the length of axis "
                          f"{axis}), got {k!r}")


def kth_largest(values: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The k-th largest entry of ``values`` along ``axis`` (``1 <= k <=`` its length), that axis kept with size 1;
    NaN where the row holds a NaN. Any shape, any strides, float32 or float64. Introselect, or the sampled bracket
    for wide groups where :data:`SAMPLED_BRACKET` (the same values either way). Another axis, ``k`` or dtype: one
    :class:`~kwta_robust.errors.ConfigError` line."""
    if (type(k) is not int or type(axis) is not int or not -values.ndim <= axis < values.ndim
            or not 1 <= k <= values.shape[axis] or values.dtype.kind != "f"):
        _check_selection(values, k, axis)  # off the fast path: raises unless k and axis are NumPy integers
    n = values.shape[axis]
    rows = values.size // max(n, 1)
    if not SAMPLED_BRACKET or n < MIN_SAMPLED_WIDTH or rows < MIN_SAMPLED_ROWS:
        return introselect_kth_largest(values, k, axis)
    last = np.moveaxis(values, axis, -1)
    flat = np.ascontiguousarray(last.reshape(rows, n))
    blocks = max(1, min(rows // MIN_SAMPLED_ROWS, -(-rows * n // BLOCK_ENTRIES)))  # in cache; no page faults
    kth = np.concatenate([sampled_kth_largest(block, k) for block in np.array_split(flat, blocks)])
    return np.expand_dims(kth.reshape(last.shape[:-1]), axis)
