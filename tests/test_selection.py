"""The kWTA threshold's sampled bracket (issue 13, :mod:`kwta_robust.selection`) selects exactly what ``torch.topk``
selects: ties, infinities, NaN rows, float64, every k, rows the bracket misses or finds too wide, any axis and
strides, and the kWTA layer's wide groups in every mode; it runs on the hosts where NumPy's partition is slow (AMD
Zen 4 with NumPy's AVX-512 build) and nowhere else. The tests of the bracket's path switch it on, whatever the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kwta_robust.layers as layers
import kwta_robust.selection as selection
from kwta_robust.layers import kwta_threshold
from kwta_robust.selection import kth_largest, sample_columns, sampled_kth_largest


def topk_kth(values: np.ndarray, k: int) -> np.ndarray:
    """The reference: ``topk(k).values.amin()`` of each row (NaN ranks largest: a row holding one gives NaN)."""
    return torch.from_numpy(values).topk(k, dim=1, sorted=False).values.amin(dim=1).numpy()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def random_rows(kind: str, rows: int, n: int, dtype: type, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((rows, n))
    if kind == "ties":
        x = x.round(1)
    elif kind == "few-values":
        x = rng.integers(0, 3, (rows, n)).astype(float)
    elif kind == "inf":
        x[rng.random((rows, n)) < 0.2] = np.inf
        x[rng.random((rows, n)) < 0.2] = -np.inf
    elif kind == "nan":
        x[::3, rng.integers(0, n, 2)] = np.nan  # every third row holds two
    elif kind == "sorted":  # ascending and descending rows: the sample sees a ramp
        x = np.sort(x, axis=1)
        x[::2] = x[::2, ::-1]
    elif kind == "signed-zeros":
        x[:, ::3] = 0.0
        x[:, 1::3] = -0.0
    return x.astype(dtype)


@pytest.fixture
def bracket_on(monkeypatch) -> None:
    """The sampled bracket on wide groups, as on a Zen 4 host (this host may take introselect)."""
    monkeypatch.setattr(selection, "SAMPLED_BRACKET", True)


KINDS = ["normal", "ties", "few-values", "inf", "nan", "sorted", "signed-zeros"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampled_bracket_gives_the_topk_value(kind: str, dtype: type, bracket_on: None) -> None:
    rng = np.random.default_rng([KINDS.index(kind), int(dtype == np.float64)])
    for n in (1024, 1568, 3136):
        x = random_rows(kind, 24, n, dtype, rng)
        for k in sorted({1, 2, 3, n // 20, n // 10, n // 2, int(rng.integers(1, n + 1)), n - 2, n - 1, n}):
            got, want = sampled_kth_largest(x, k), topk_kth(x, k)
            assert same(got, want), (kind, n, k)
            assert same(kth_largest(x, k, 1)[:, 0], want)
    if kind == "nan":
        assert np.isnan(got).any() and not np.isnan(got).all()


def test_rows_the_bracket_misses_fall_back_to_introselect(monkeypatch) -> None:
    """A sample holding its rows' largest values puts the bracket above the k-th largest; a row of one repeated
    value leaves no candidate: those rows (and only those) are selected by introselect, exactly."""
    rng = np.random.default_rng(0)
    n, k = 2048, 200
    x = rng.standard_normal((32, n)).astype(np.float32)
    s = selection._bracket_ranks(n, k)[0]
    x[:4, sample_columns(n, s)] = 10 + rng.random((4, s), dtype=np.float32)
    x[4] = 0.5
    fallback_rows = []
    introselect = selection.introselect_kth_largest
    monkeypatch.setattr(selection, "introselect_kth_largest",
                        lambda v, kk, axis: fallback_rows.append(v.shape[0]) or introselect(v, kk, axis))
    assert same(sampled_kth_largest(x, k), topk_kth(x, k))
    assert fallback_rows == [5]


@pytest.mark.parametrize("wide_rows", [2, 16])
def test_rows_with_too_many_candidates(wide_rows: int, monkeypatch) -> None:
    """Rows whose candidates exceed a sorting-network row: a few fall back, many are sorted wide; same values."""
    rng = np.random.default_rng(1)
    n, k = 2048, 1024
    x = rng.standard_normal((32, n)).astype(np.float32)
    s, lo, hi = selection._bracket_ranks(n, k)
    columns = sample_columns(n, s)
    rest = np.setdiff1d(np.arange(n), columns)
    x[:wide_rows, columns] = np.arange(s, dtype=np.float32)
    x[:wide_rows, rest] = (lo + hi) / 2 + rng.random((wide_rows, rest.size), dtype=np.float32) / 4  # all candidates
    fallback_rows = []
    introselect = selection.introselect_kth_largest
    monkeypatch.setattr(selection, "introselect_kth_largest",
                        lambda v, kk, axis: fallback_rows.append(v.shape[0]) or introselect(v, kk, axis))
    assert same(sampled_kth_largest(x, k), topk_kth(x, k))
    assert fallback_rows == ([wide_rows] if 8 * wide_rows <= x.shape[0] else [])


def test_any_axis_strides_and_blocks(monkeypatch, bracket_on: None) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1200, 40)).astype(np.float32).round(2)
    want = topk_kth(np.ascontiguousarray(x.T), 100)
    assert same(kth_largest(x, 100, 0), want[None, :])  # a non-contiguous axis: copied to rows
    assert same(kth_largest(x.T, 100, -1), want[:, None])
    cube = rng.standard_normal((20, 1100, 3)).astype(np.float64)
    got = kth_largest(cube, 7, 1)
    assert got.shape == (20, 1, 3)
    assert same(got[:, 0, :].ravel(), topk_kth(np.ascontiguousarray(cube.transpose(0, 2, 1)).reshape(60, 1100), 7))
    monkeypatch.setattr(selection, "BLOCK_ENTRIES", 5000)  # rows in several blocks of unequal size
    assert same(kth_largest(x.T, 100, 1), want[:, None])
    long_rows = rng.standard_normal((16, 2**16 + 3)).astype(np.float32)  # counts past uint16
    assert same(kth_largest(long_rows, 6000, 1)[:, 0], topk_kth(long_rows, 6000))


def test_narrow_rows_and_small_batches_keep_introselect(monkeypatch, bracket_on: None) -> None:
    monkeypatch.setattr(selection, "sampled_kth_largest", lambda *args: pytest.fail("sampled path taken"))
    rng = np.random.default_rng(3)
    for shape in ((64, selection.MIN_SAMPLED_WIDTH - 1), (selection.MIN_SAMPLED_ROWS - 1, 4096)):
        x = rng.standard_normal(shape).astype(np.float32)
        assert same(kth_largest(x, 50, 1)[:, 0], topk_kth(x, 50))


def test_without_the_bracket_every_group_takes_introselect(monkeypatch) -> None:
    """A host whose partition is fast (SAMPLED_BRACKET false): wide groups in large batches take introselect too,
    with the same values."""
    monkeypatch.setattr(selection, "SAMPLED_BRACKET", False)
    monkeypatch.setattr(selection, "sampled_kth_largest", lambda *args: pytest.fail("sampled path taken"))
    x = random_rows("ties", 64, 3136, np.float32, np.random.default_rng(5))
    for k in (1, 156, 627, 3135):
        assert same(kth_largest(x, k, 1)[:, 0], topk_kth(x, k))


def cpuinfo(vendor: str, family: int, processors: int = 2) -> str:
    block = f"processor\t: {{}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\nflags\t\t: avx512f\n"
    return "\n".join(block.format(i) for i in range(processors))


AVX512 = {"AVX512_SKX": True, "AVX2": True}
AVX2_ONLY = {"AVX512_SKX": False, "AVX2": True}  # e.g. NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"


@pytest.mark.parametrize("text,features,slow", [
    (cpuinfo("AuthenticAMD", 25), AVX512, True),  # Zen 4: microcoded compress-stores
    (cpuinfo("AuthenticAMD", 25), AVX2_ONLY, False),  # NumPy's AVX2 build: fast there
    (cpuinfo("AuthenticAMD", 26), AVX512, False),  # Zen 5
    (cpuinfo("AuthenticAMD", 23), AVX2_ONLY, False),  # Zen 2
    (cpuinfo("GenuineIntel", 6), AVX512, False),
    (cpuinfo("GenuineIntel", 6), {}, False),  # a NumPy without the feature table
    ("", AVX512, False),  # no /proc/cpuinfo (not Linux)
    ("vendor_id\t: AuthenticAMD\ncpu family\t: unknown\n", AVX512, False),
])
def test_partition_is_slow_only_on_zen4_with_numpys_avx512_build(text: str, features: dict, slow: bool) -> None:
    assert selection.partition_is_slow(text, features) is slow


def test_this_hosts_choice_is_read_from_its_cpu() -> None:
    """The module's choice is the function's on this host's own /proc/cpuinfo and NumPy features."""
    assert selection.SAMPLED_BRACKET is selection.partition_is_slow()


def test_sample_columns_are_distinct_and_cover_every_channel() -> None:
    for n, channels in ((3136, 16), (1568, 32), (1024, 64), (4096, 256)):
        columns = sample_columns(n, 256)
        assert len(set(columns.tolist())) == 256 and columns.min() >= 0 and columns.max() < n
        assert len(set((columns % channels).tolist())) == channels  # not a stride aliasing with the channels


WIDE_GROUPS = [("dense", (20, 1100), False)] + [
    (mode, shape, channels_last) for mode, shape in (("volume", (20, 16, 8, 8)), ("channel", (8, 3, 32, 32)),
                                                     ("local", (2, 1024, 3, 3))) for channels_last in (False, True)]


@pytest.mark.parametrize("mode,shape,channels_last", WIDE_GROUPS)
def test_layer_thresholds_on_wide_groups(mode: str, shape: tuple[int, ...], channels_last: bool,
                                         monkeypatch, bracket_on: None) -> None:
    """kwta_threshold with the sampled bracket (wide groups, one torch thread) against torch.topk's."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4)).round(decimals=1)
    x.view(-1)[5] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sampled = []
        original = selection.sampled_kth_largest
        monkeypatch.setattr(selection, "sampled_kth_largest", lambda v, k: sampled.append(1) or original(v, k))
        size = layers.group_size(x.shape, mode)
        got = [kwta_threshold(x, k, mode) for k in (2, size // 10, size // 2, size - 1)]
        assert sampled  # the bracket ran
        monkeypatch.setattr(layers, "_select_on_host", lambda flat: False)
        for k, thr in zip((2, size // 10, size // 2, size - 1), got):
            want = kwta_threshold(x, k, mode)
            assert thr.shape == want.shape and thr.dtype == want.dtype
            assert torch.equal(thr.isnan(), want.isnan()) and torch.equal(thr.nan_to_num(), want.nan_to_num())
    finally:
        torch.set_num_threads(threads)
