"""Fuzz round on the kWTA layer by differential testing: the layer's thresholds, masks, outputs and gradients
against a plain-torch reference (``topk(k).values.amin()`` per group), and every bad setting or input of the layer,
its functions and :func:`kwta_robust.selection.kth_largest` refused in one :class:`KwtaRobustError` line naming the
field — never a raw ``TypeError``/``IndexError``/``KeyError``, a NaN gradient or a silently truncated setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.layers import KWTA, KWTA2d, kwta, kwta_threshold, smooth_kwta, smooth_kwta_and_mask, winner_mask
from kwta_robust.selection import kth_largest, sample_columns
from tests.test_selection import bracket_on  # noqa: F401  (fixture: the sampled bracket on, whatever the host)

T = torch.tensor


def one_line(excinfo: pytest.ExceptionInfo, fragment: str) -> None:
    """The error is the package's class, one line, and holds ``fragment``."""
    message = str(excinfo.value)
    assert isinstance(excinfo.value, KwtaRobustError) and "\n" not in message and fragment in message, message


def reference_threshold(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """``topk(k).values.amin()`` per group, written per mode from the module docstring, shaped like ``x``."""
    n = x.shape[0]
    if mode in ("dense", "volume"):
        flat = x.reshape(n, -1)
        return flat.topk(k, dim=1).values.amin(dim=1).reshape((n,) + (1,) * (x.ndim - 1)).expand_as(x)
    if mode == "channel":
        flat = x.reshape(n * x.shape[1], -1)
        return flat.topk(k, dim=1).values.amin(dim=1).reshape(n, x.shape[1], 1, 1).expand_as(x)
    per_location = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # local: across the channels
    thr = per_location.topk(k, dim=1).values.amin(dim=1)
    return thr.reshape(n, x.shape[2], x.shape[3], 1).permute(0, 3, 1, 2).expand_as(x)


# --- the smooth relaxation when every unit wins ----------------------------------------------------------------------
@pytest.mark.parametrize("mode, shape, k", [("dense", (2, 3), 3), ("dense", (2, 3), 7), ("volume", (2, 2, 2, 2), 8),
                                            ("channel", (2, 3, 2, 2), 4), ("local", (2, 3, 2, 2), 3)])
def test_smooth_relaxation_with_every_unit_winning_has_gradient_one(mode: str, shape: tuple, k: int) -> None:
    # before: the threshold is -inf, so (s - t) / tau is inf and its slope in tau (through std(s)) inf · 0 = NaN
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = smooth_kwta(x, k, mode, 0.1)
    y.sum().backward()
    assert torch.equal(y.detach(), x.detach()) and torch.equal(x.grad, torch.ones(shape))


def test_ratio_one_layer_with_smooth_backward_gives_the_identity_gradient() -> None:
    x = T([[1.0, -2.0, 3.0]], requires_grad=True)
    KWTA(ratio=1.0, backward="smooth", temperature=0.1)(x).sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 1.0]]


# --- the functions' arguments ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, shown", [(2.5, "2.5"), (float("nan"), "nan"), (float("inf"), "inf"), (None, "None"),
                                      ("3", "'3'"), (True, "True"), (T([1, 2]), "tensor")])
@pytest.mark.parametrize("call", [lambda x, k: kwta_threshold(x, k, "dense"), lambda x, k: winner_mask(x, k, "dense"),
                                  lambda x, k: kwta(x, k, "dense"), lambda x, k: smooth_kwta(x, k, "dense", 0.5),
                                  lambda x, k: smooth_kwta_and_mask(x, k, "dense", 0.5)])
def test_functions_refuse_a_k_that_is_no_integer(call, k, shown: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        call(T([[4.0, 1.0, 3.0, 2.0]]), k)
    one_line(excinfo, f"kWTA k must be an integer >= 1, got {shown}")


@pytest.mark.parametrize("k", [3.0, np.int64(3), T(3)])
def test_functions_take_integral_k_of_any_integer_type(k) -> None:
    x = T([[4.0, 1.0, 3.0, 2.0]])
    assert kwta(x, k, "dense").tolist() == [[4.0, 0.0, 3.0, 2.0]]
    assert smooth_kwta_and_mask(x, k, "dense", 0.5)[1].tolist() == [[1.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("mode", ["Dense", "", None, 3, "volume2"])
def test_functions_refuse_an_unknown_mode(mode) -> None:
    x = torch.ones(2, 3, 2, 2)
    for call in (lambda: kwta(x, 2, mode), lambda: smooth_kwta(x, 2, mode, 1.0)):
        with pytest.raises(ConfigError) as excinfo:
            call()
        one_line(excinfo, f"kWTA mode must be one of dense, volume, channel, local, got {mode!r}")


@pytest.mark.parametrize("shape", [(5,), ()])
def test_dense_functions_refuse_an_input_without_a_batch_dim(shape: tuple) -> None:
    with pytest.raises(ConfigError) as excinfo:
        kwta(torch.ones(shape), 1, "dense")
    one_line(excinfo, f"kWTA mode 'dense' expects a batch [N, F], got shape {shape}")


@pytest.mark.parametrize("shape, mode", [((3, 0), "dense"), ((2, 0, 2, 2), "local"), ((2, 3, 0, 2), "channel")])
def test_empty_groups_are_one_line_but_empty_batches_run(shape: tuple, mode: str) -> None:
    for call in (lambda: kwta(torch.ones(shape), 1, mode), lambda: KWTA(k=1)(torch.ones(shape)) if mode == "dense"
                 else KWTA2d(k=1, mode=mode)(torch.ones(shape))):
        with pytest.raises(ConfigError) as excinfo:
            call()
        one_line(excinfo, f"kWTA input of shape {shape} has empty groups in mode {mode!r}")
    assert kwta(torch.ones(0, 5), 2, "dense").shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_non_float_inputs_are_refused_not_masked_as_integers(dtype: torch.dtype) -> None:
    x = torch.ones(2, 4, dtype=dtype)
    for call in (lambda: winner_mask(x, 2, "dense"), lambda: KWTA(k=2)(x), lambda: smooth_kwta(x, 2, "dense", 1.0)):
        with pytest.raises(ConfigError) as excinfo:
            call()
        one_line(excinfo, f"kWTA input must be a floating-point tensor, got dtype {dtype}")


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), None, "1", True])
def test_smooth_functions_refuse_a_temperature_not_above_zero(temperature) -> None:
    with pytest.raises(ConfigError) as excinfo:
        smooth_kwta(T([[4.0, 1.0, 3.0]]), 1, "dense", temperature)
    one_line(excinfo, f"kWTA temperature must be > 0, got {temperature!r}")


# --- the layer's settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    ({"k": True}, "kWTA k must be an integer >= 1, got True"),
    ({"k": None, "ratio": True}, "kWTA ratio must be in (0, 1], got True"),
    ({"k": None, "ratio": "0.1"}, "kWTA ratio must be in (0, 1], got '0.1'"),
    ({"temperature": "1"}, "kWTA temperature must be > 0, got '1'"),
    ({"boost_strength": float("nan"), "num_units": 4}, "kWTA boost_strength must be >= 0, got nan"),
    ({"boost_strength": "1", "num_units": 4}, "kWTA boost_strength must be >= 0, got '1'"),
    ({"boost_strength": 1.0, "num_units": 0}, "kWTA num_units must be an integer >= 1"),
    ({"boost_strength": 1.0, "num_units": -3}, "kWTA num_units must be an integer >= 1"),
    ({"boost_strength": 1.0, "num_units": 2.5}, "kWTA num_units must be an integer >= 1"),
    ({"duty_cycle_period": 2.5}, "kWTA duty_cycle_period must be >= 1 (an integer), got 2.5"),
    ({"duty_cycle_period": float("nan")}, "kWTA duty_cycle_period must be >= 1 (an integer), got nan"),
    ({"duty_cycle_period": None}, "kWTA duty_cycle_period must be >= 1 (an integer), got None"),
    ({"k_inference_factor": float("nan")}, "kWTA k_inference_factor must be > 0, got nan"),
    ({"k_inference_factor": float("inf")}, "kWTA k_inference_factor must be > 0, got inf"),
    ({"k_inference_factor": None}, "kWTA k_inference_factor must be > 0, got None"),
    ({"k": 0}, "kWTA k must be an integer >= 1, got 0"),
])
def test_bad_layer_settings_are_one_package_error_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        KWTA(**{"k": 2, "backward": "smooth", **kwargs})
    one_line(excinfo, fragment)


def test_boosted_layer_refuses_an_input_of_another_width() -> None:
    for layer, x, what in [(KWTA(k=2, boost_strength=1.0, num_units=5), torch.ones(3, 8), "8 features"),
                           (KWTA2d(k=2, boost_strength=1.0, num_units=5), torch.ones(3, 4, 2, 2), "4 channels")]:
        with pytest.raises(ConfigError) as excinfo:
            layer(x)
        one_line(excinfo, f"kWTA num_units is 5 but the input of shape {tuple(x.shape)} has {what}")
        assert torch.equal(layer.duty_cycle, torch.zeros(5)) and layer.learning_iterations.item() == 0


def test_integral_float_settings_keep_working() -> None:
    layer = KWTA(k=3.0, duty_cycle_period=10.0, boost_strength=1, num_units=4)
    assert layer.k == 3 and layer.duty_cycle_period == 10 and layer.boost_strength == 1.0


# --- kth_largest itself ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, axis, fragment", [
    (0, 1, "k must be an integer in [1, 6] (the length of axis 1), got 0"),
    (7, 1, "k must be an integer in [1, 6] (the length of axis 1), got 7"),
    (-1, 1, "got -1"), (2.5, 1, "got 2.5"), (None, 1, "got None"), (True, 1, "got True"),
    (1, 2, "axis must be an integer in [-2, 1] for an array of shape (4, 6), got 2"),
    (1, -3, "got -3"), (1, None, "got None"),
])
def test_kth_largest_refuses_k_and_axis_out_of_range(k, axis, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        kth_largest(np.zeros((4, 6), np.float32), k, axis)
    one_line(excinfo, "kth_largest: " + fragment if fragment.startswith(("k ", "axis")) else fragment)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_])
def test_kth_largest_refuses_non_float_arrays(dtype) -> None:
    with pytest.raises(ConfigError) as excinfo:
        kth_largest(np.ones((20, 2048), dtype), 3, 1)
    one_line(excinfo, f"kth_largest: values must be a floating-point array, got dtype {np.dtype(dtype)}")


def test_kth_largest_takes_numpy_integers_on_every_axis() -> None:
    values = np.random.default_rng(0).standard_normal((5, 7, 9)).astype(np.float32)
    for axis in range(-3, 3):
        n = values.shape[axis]
        got = kth_largest(values, np.int64(2), np.int64(axis))
        assert np.array_equal(got, np.take(np.sort(values, axis=axis), [n - 2], axis=axis))


# --- differential: patterns aimed at the sampled bracket, dtypes and strides ----------------------------------------
def bracket_patterns(rows: int, n: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    sampled = torch.from_numpy(sample_columns(n, 256))
    top = torch.randn(rows, n, generator=gen)
    top[:, sampled] = 100.0  # every sampled column holds the maximum
    miss = torch.zeros(rows, n)
    miss[:, sampled] = torch.arange(256.0)  # the sample's spread is nowhere else in the row
    return {"sampled-max": top, "concentrated": miss, "subnormal": torch.randn(rows, n, generator=gen) * 1e-42,
            "huge": torch.randn(rows, n, generator=gen) * 3e38,
            "two-values": (torch.randn(rows, n, generator=gen) > 0).float()}


@pytest.mark.parametrize("k", [1, 2, 100, 1023, 1024])
def test_bracket_patterns_match_the_reference(k: int, bracket_on) -> None:  # noqa: F811
    for name, x in bracket_patterns(16, 1024).items():
        ref = reference_threshold(x, k, "dense")
        assert torch.equal(kwta_threshold(x, k, "dense").expand_as(x), ref), name
        assert torch.equal(winner_mask(x, k, "dense"), (x >= ref).float()), name


@pytest.mark.parametrize("mode", ["dense", "volume", "channel", "local"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_thresholds_of_other_dtypes_and_expanded_inputs(mode: str, dtype: torch.dtype) -> None:
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(2)).to(dtype).expand(3, 4, 3, 3)
    for k in (1, 2, 3):
        ref = reference_threshold(x, k, mode)
        assert torch.equal(kwta_threshold(x, k, mode).expand_as(x), ref)
        mask = smooth_kwta_and_mask(x, k, mode, 0.5)[1]
        assert mask.dtype == dtype and torch.equal(mask, (x >= ref).to(dtype))
