"""Noise-robustness probes: accuracy under random (not adversarial) input corruption at several levels.

Not eps-ball attacks, so they have their own small interface: a :class:`NoiseProbe` turns clean inputs
``x [N, ...]`` in ``bounds`` into noisy inputs for one ``level`` with an explicit ``torch.Generator``;
:func:`run_noise_probe` runs a probe over levels and seeded draws and returns a :class:`NoiseProbeResult`.

Probes (``available_noise_probes()``):

* ``gaussian``: ``x + level * N(0, 1)`` (level = standard deviation);
* ``uniform``: ``x + U(-level, level)`` (level = half-width);
* ``salt-and-pepper``: exactly ``floor(level * P)`` of the ``P`` pixels of each input, chosen without
  replacement, set to the lower or upper bound with probability 1/2 each (level = fraction of pixels);
* ``numenta``: the protocol of Ahmad & Scheinkman 2019, "How Can We Be So Dense? The Benefits of Using Highly
  Sparse Representations" (arXiv:1903.11257): exactly ``floor(eta * P)`` pixels, chosen without replacement,
  set to one fixed bright ``value``, for ``eta = 0.00, 0.05, ..., 0.50``; the *noise score* is the total number
  of correct classifications summed over all levels. ``value`` defaults to 1.0 (white). The paper's code set the
  pixels to ``0.1307 + 2 * 0.3081 ≈ 0.747`` on the [0, 1] pixel scale (MNIST mean + 2 std, "near white"),
  before normalisation: pass ``value=NUMENTA_MNIST_VALUE`` to reproduce it on MNIST.

A *pixel* is a spatial location of an NCHW image (all channels change together) and a single feature of any
other input shape. Noisy inputs are clipped to ``bounds``. Every (level, draw) has its own generator seeded
from ``(seed, probe, level, draw)``, so results do not depend on the batch size, the other levels asked for,
or the global RNG, and are identical across calls with the same seed. On the CPU the draws fill the inputs row by
row, so a sample's noise does not depend on how many samples follow it (evaluating 200 samples gives the
first 100 the noise 100 samples get) — for ``gaussian`` only where a sample's size is a multiple of 16 (torch's
normal sampler transforms 16 values at a time: 784 or 3 × 32 × 32, not 3 × 5 × 5); a CUDA generator promises
neither. Level 0 returns the clean inputs, so its accuracy is the clean accuracy exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from attacks.base import AttackConfigError, ThreatModel, check_inputs, check_logits, eval_mode
from attacks.cascade import AttackContractError, is_code_failure
from attacks.errors import (FLOAT32_MAX, RegistryError, check_binds, count_problem, first_line, invalid_parameters,
                           is_finite_number, is_seed)
from attacks.plugin_isolation import isolated
from attacks.registry import Registry
from attacks.verdicts import Verdict, finite_predictions

logger = logging.getLogger(__name__)

#: The bright value of Ahmad & Scheinkman's reference code: MNIST mean + 2 std on the [0, 1] pixel scale.
NUMENTA_MNIST_VALUE = 0.1307 + 2 * 0.3081
#: Random draws per level when none are given: the one default of both doors, :func:`run_noise_probe` and a config's
#: ``noise[].draws`` (``kwta_robust.specs.NoiseSpec`` reads it), so the same probe gives the same number from either.
DEFAULT_NOISE_DRAWS = 1


@runtime_checkable
class NoiseProbe(Protocol):
    """Corrupts a batch for one noise level: ``apply(x [N, ...], level, generator) -> [N, ...]`` (unclipped)."""

    name: str
    level_name: str
    max_level: float | None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor: ...

    def default_levels(self) -> tuple[float, ...]: ...


def _is_level_cap(cap: object) -> bool:
    """Whether a probe's ``max_level`` is one: ``None`` (no cap) or a finite number > 0."""
    return cap is None or (is_finite_number(cap) and cap > 0)


def _check_probe(name: str, probe: Callable[..., NoiseProbe]) -> None:
    """A probe class has the :class:`NoiseProbe` members, and its ``name`` is the name it is registered under (records
    and tables name a probe by it)."""
    missing = [m for m in ("name", "level_name", "max_level", "apply", "default_levels") if not hasattr(probe, m)]
    if missing or getattr(probe, "name", name) != name:
        what = f"lacks {', '.join(missing)}" if missing else f"has name {getattr(probe, 'name')!r}"
        raise RegistryError("noise", f"noise probe {name!r}: {getattr(probe, '__qualname__', probe)} {what}; a probe "
                                     f"class has the members of attacks.noise.NoiseProbe, with name = {name!r}")
    if not _is_level_cap(probe.max_level):  # compared with every level: "1" raised TypeError
        raise RegistryError("noise", f"noise probe {name!r}: max_level must be None or a finite number > 0, got "
                                     f"{probe.max_level!r}; fix the probe")


#: The noise probes by name (a generic :class:`~attacks.registry.Registry` of probe classes).
NOISE_PROBES: Registry[Callable[..., NoiseProbe]] = Registry("noise probe", field="noise", check=_check_probe,
                                                             entry_point_group="kwta_robust.noise_probes")


def _pixel_mask(x: Tensor, fraction: float, generator: torch.Generator,
                choices: bool = False) -> tuple[Tensor, Tensor]:
    """Exactly ``floor(fraction * P)`` pixels per sample, without replacement.

    Returns ``(mask, u)``: a bool mask broadcastable to ``x`` (``[N, 1, H, W]`` for NCHW, else ``x``'s shape)
    and, with ``choices``, uniform draws of the mask's shape independent of it (for per-pixel choices such as salt
    vs pepper); without, ``u`` is empty and only the mask is drawn. Scores and choices are one ``[N, 2, P]`` draw,
    so sample ``i``'s come from the rows before it alone: drawn after all ``N`` rows of scores, its choices
    depended on ``N`` (evaluating more samples changed the salt and pepper of the first ones).
    """
    n = x.shape[0]
    pixel_shape = (1, *x.shape[2:]) if x.ndim == 4 else tuple(x.shape[1:])
    pixels = math.prod(pixel_shape)
    count = int(math.floor(fraction * pixels + 1e-9))
    draws = torch.rand((n, 2 if choices else 1, pixels), generator=generator, device=x.device)
    mask = _lowest(draws[:, 0], count)
    u = draws[:, 1].reshape(n, *pixel_shape) if choices else draws.new_empty((0,))
    return mask.view(n, *pixel_shape), u


def _lowest(scores: Tensor, count: int) -> Tensor:
    """``[N, P]`` bool: in each row the ``count`` positions of ``scores`` ``[N, P]`` that ``argsort`` puts first.

    A selection, not a sort: every score up to the row's ``count``-th smallest (the largest of ``topk``'s ``count``
    smallest), where that is ``count`` scores; a row where more scores tie at that value than places are left (two
    equal 24-bit uniform draws straddling the cut: a few rows in 10,000 at 50 % of 784 pixels) takes argsort's own
    pick, so the mask is the sort's. About 3x faster than sorting every row (10,000 MNIST images at 50 %: 0.11 s
    instead of 0.42 s a level and draw; the numenta probe's 10 default noisy levels at 3 draws sorted for 13 s).
    """
    n, pixels = scores.shape
    if count <= 0 or n == 0:
        return torch.zeros((n, pixels), dtype=torch.bool, device=scores.device)
    cut = scores.topk(count, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)
    mask = scores <= cut
    ambiguous = (mask.view(torch.uint8).sum(dim=1, dtype=torch.int32) > count).nonzero().flatten()
    if ambiguous.numel():
        rows = scores[ambiguous].argsort(dim=1)[:, :count]
        mask[ambiguous] = torch.zeros_like(mask[ambiguous]).scatter_(1, rows, True)
    return mask


@NOISE_PROBES.register('gaussian')
@dataclass(frozen=True)
class GaussianNoise:
    """Additive Gaussian noise ``x + level * N(0, 1)``; level = standard deviation."""

    name: ClassVar[str] = "gaussian"
    level_name: ClassVar[str] = "std"
    max_level: ClassVar[float | None] = None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


@NOISE_PROBES.register('uniform')
@dataclass(frozen=True)
class UniformNoise:
    """Additive uniform noise ``x + U(-level, level)``; level = half-width."""

    name: ClassVar[str] = "uniform"
    level_name: ClassVar[str] = "half-width"
    max_level: ClassVar[float | None] = None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + level * (2 * u - 1)

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


@NOISE_PROBES.register('salt-and-pepper')
@dataclass(frozen=True)
class SaltAndPepperNoise:
    """Salt-and-pepper: ``floor(level * P)`` pixels set to the upper (salt) or lower (pepper) bound, p = 1/2."""

    name: ClassVar[str] = "salt-and-pepper"
    level_name: ClassVar[str] = "fraction"
    max_level: ClassVar[float | None] = 1.0

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        mask, u = _pixel_mask(x, level, generator, choices=True)
        salt = torch.where(u < 0.5, bounds[1], bounds[0]).to(x.dtype)
        return torch.where(mask, salt, x)

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


@NOISE_PROBES.register('numenta')
@dataclass(frozen=True)
class NumentaNoise:
    """Ahmad & Scheinkman (2019): ``floor(eta * P)`` pixels set to ``value`` (default 1.0; the paper's code used
    ``NUMENTA_MNIST_VALUE`` ≈ 0.747, MNIST mean + 2 std), ``eta = 0.00, 0.05, ..., 0.50``."""

    value: float = 1.0
    name: ClassVar[str] = "numenta"
    level_name: ClassVar[str] = "fraction"
    max_level: ClassVar[float | None] = 1.0

    def __post_init__(self) -> None:
        if not (is_finite_number(self.value) and 0.0 <= self.value <= 1.0):
            raise AttackConfigError(f"noise probe 'numenta': value is a pixel value on the [0, 1] scale of the "
                                    f"inputs (1.0 white, {NUMENTA_MNIST_VALUE:.4f} the paper's), got {self.value!r}")

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        mask, _ = _pixel_mask(x, level, generator)
        return torch.where(mask, torch.full((), float(self.value), dtype=x.dtype, device=x.device), x)

    def default_levels(self) -> tuple[float, ...]:
        return tuple(round(0.05 * i, 2) for i in range(11))


def available_noise_probes() -> list[str]:
    """Names of the registered noise probes."""
    return NOISE_PROBES.names()


def create_noise_probe(kind: str, **params: Any) -> NoiseProbe:
    """Build a probe by name (``AttackConfigError`` naming the known ones if unknown, or the parameters its
    signature does not bind). A ``TypeError`` raised inside a factory whose signature bound them is the probe's own
    failure and propagates as its other exceptions do (a config reads it "noise probe 'x' raised TypeError: ...",
    :class:`kwta_robust.specs.NoiseSpec`; it read "invalid parameters" though the call was fine)."""
    factory = NOISE_PROBES.get(kind)
    if check_binds(f"noise probe {kind!r}", factory, params):
        return factory(**params)
    try:  # no readable signature: a TypeError may be the call's
        return factory(**params)
    except TypeError as exc:
        raise invalid_parameters(f"noise probe {kind!r}", factory, params, exc) from None


def probe_params(probe: NoiseProbe, given: Mapping[str, Any]) -> dict[str, Any]:
    """The params a record holds for ``probe`` (and a dry run shows): a dataclass probe's fields, defaults too
    (numenta's ``value``); another probe's (a plug-in class) the ``given`` params it was built with, not ``{}``."""
    return asdict(probe) if is_dataclass(probe) and not isinstance(probe, type) else dict(given)


def default_levels(kind: str) -> tuple[float, ...]:
    """The default levels of a probe (Numenta: ``0.00, 0.05, ..., 0.50``)."""
    return create_noise_probe(kind).default_levels()


@dataclass(frozen=True)
class NoiseProbeResult:
    """Accuracy under one noise probe.

    ``accuracy[l]``: mean accuracy at ``levels[l]`` over the draws; ``draw_accuracy[l][d]``: per draw;
    ``correct_counts`` ``[n_levels, N]`` int64: in how many draws each sample was classified correctly.
    ``total_correct``: correct classifications summed over levels, draws and samples. ``noise_score``: Ahmad &
    Scheinkman's score, the total number correct over all levels, averaged over draws (``total_correct /
    draws``; an integer count for one draw); ``noise_score_normalized = noise_score / (n_levels * N)``.
    ``non_finite_inputs[l]``: how many of the ``N`` inputs had NaN or infinite logits at ``levels[l]`` on any draw
    (of the noise, or of a randomized model's plurality): they count as misclassified, so a low score may be made
    of them, which the ``non-finite-logits`` diagnostic reports; ``None`` where a ``verdict`` returned bare bools
    and the probe could not tell.
    """

    kind: str
    levels: tuple[float, ...]
    draws: int
    seed: int
    params: dict[str, Any]
    num_samples: int
    accuracy: tuple[float, ...]
    draw_accuracy: tuple[tuple[float, ...], ...]
    correct_counts: Tensor
    non_finite_inputs: tuple[int, ...] | None = None

    @property
    def total_correct(self) -> int:
        return int(self.correct_counts.sum().item())

    @property
    def noise_score(self) -> float:
        return self.total_correct / self.draws

    @property
    def noise_score_normalized(self) -> float:
        denominator = len(self.levels) * self.num_samples
        return self.noise_score / denominator if denominator else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and lists only (JSON-ready)."""
        return {
            "kind": self.kind,
            "levels": list(self.levels),
            "draws": self.draws,
            "seed": self.seed,
            "params": dict(self.params),
            "num_samples": self.num_samples,
            "accuracy": list(self.accuracy),
            "draw_accuracy": [list(row) for row in self.draw_accuracy],
            "correct_counts": self.correct_counts.tolist(),
            "total_correct": self.total_correct,
            "noise_score": self.noise_score,
            "noise_score_normalized": self.noise_score_normalized,
            "non_finite_inputs": None if self.non_finite_inputs is None else list(self.non_finite_inputs),
        }


def derive_seed(seed: int, kind: str, level: float, draw: int) -> int:
    """A 63-bit seed for one (probe, level, draw), stable across runs, platforms and level lists."""
    digest = hashlib.sha256(f"{int(seed)}|{kind}|{float(level)!r}|{int(draw)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_arguments(model: Any, x: Any, y: Any, kind: Any, seed: Any) -> None:
    """The types of :func:`run_noise_probe`'s arguments, and its seed: a one-line :class:`AttackConfigError` each
    (a seed of 1.5 was truncated to 1, a list of inputs or a kind of None raised Python's own error)."""
    for field, value, want, what in (("model", model, nn.Module, "an nn.Module classifier"),
                                     ("x", x, Tensor, "a tensor of inputs [N, ...]"),
                                     ("y", y, Tensor, "a tensor of labels [N]")):
        if not isinstance(value, want):
            raise AttackConfigError(f"{field}: expected {what}, got {type(value).__name__}")
    if not isinstance(kind, (str, NoiseProbe)):
        raise AttackConfigError(f"noise: kind must be a noise probe name like 'numenta' or a NoiseProbe, got "
                                f"{type(kind).__name__}")
    if not is_seed(seed):
        raise AttackConfigError(f"noise: seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def _validate(probe: NoiseProbe, levels: Iterable[float], draws: int, batch_size: int) -> tuple[float, ...]:
    if isinstance(levels, (str, bytes, Mapping)) or not isinstance(levels, Iterable):
        raise AttackConfigError(f"noise: levels must be a list of numbers like [0.0, 0.1, 0.2], got "
                                f"{type(levels).__name__}")
    levels = tuple(levels)  # an iterator is read once
    if not _is_level_cap(probe.max_level):  # an unregistered probe's: a string raised TypeError, NaN capped nothing
        raise AttackContractError(f"noise probe {probe.name!r}: max_level must be None or a finite number > 0, got "
                                  f"{probe.max_level!r}; fix the probe")
    for name, value in (("draws", draws), ("batch_size", batch_size)):
        problem = count_problem(value)
        if problem is not None:
            raise AttackConfigError(f"noise: {name} {problem}")
    if len(levels) == 0:
        raise AttackConfigError("noise: levels is empty; give at least one level (or leave it unset for the defaults)")
    out = []
    for level in levels:
        if not (is_finite_number(level) and level >= 0):
            raise AttackConfigError(f"noise: levels must be finite numbers >= 0, got {level!r}")
        if level > FLOAT32_MAX:  # inf in the float32 noise: NaN inputs
            raise AttackConfigError(f"noise: levels must be at most {FLOAT32_MAX:.2g} (float32's largest), "
                                    f"got {level!r}")
        if probe.max_level is not None and level > probe.max_level:
            raise AttackConfigError(
                f"noise: {probe.name} levels are {probe.level_name}s in [0, {probe.max_level}], got {level!r}"
            )
        if float(level) in out:  # the same seeded noise again: its correct counted twice in the noise score
            raise AttackConfigError(f"noise: levels must differ, got {level!r} twice; give each level once (a repeat "
                                    "draws the same noise and counts twice in the noise score)")
        out.append(float(level))
    return tuple(out)


def _noisy(probe: NoiseProbe, x: Tensor, level: float, gen: torch.Generator, bounds: tuple[float, float]) -> Tensor:
    """``probe.apply`` clipped to ``bounds``; a probe that raises or returns anything but a finite tensor shaped,
    typed and placed like ``x`` is one :class:`~attacks.cascade.AttackContractError` line naming it."""
    try:
        with isolated(f"noise probe {probe.name!r}"):  # its prints logged, the warnings filters put back
            out = probe.apply(x, level, gen, bounds)
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug, named in one line
        if not is_code_failure(exc):
            raise
        raise AttackContractError(f"noise probe {probe.name!r} raised {type(exc).__name__}: {first_line(exc)} at "
                                  f"level {level}; fix the probe") from exc
    if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        got = f"{tuple(out.shape)} {out.dtype} on {out.device}" if isinstance(out, Tensor) else type(out).__name__
        raise AttackContractError(f"noise probe {probe.name!r} returned {got} at level {level}, expected "
                                  f"{tuple(x.shape)} {x.dtype} on {x.device} (shaped, typed and placed like x)")
    if not bool(torch.isfinite(out).all()):
        raise AttackContractError(f"noise probe {probe.name!r} returned NaN or infinite values at level {level}")
    return out.clamp(*bounds)


def _correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """One forward pass per input: which are classified correctly, and which had a NaN or infinite logit (``[N]``
    bool each)."""
    with torch.no_grad():
        logits = [model(chunk) for chunk in x.split(batch_size)]
    if logits:
        check_logits(logits[0])
        classes = logits[0].shape[1]
        if y.numel() and (y.min().item() < 0 or y.max().item() >= classes):  # never right: an accuracy of 0 by mistake
            raise AttackConfigError(f"y: labels must lie in [0, {classes - 1}] for a model with {classes} outputs, "
                                    f"got [{y.min().item()}, {y.max().item()}]")
    joined = torch.cat(logits)
    finite = joined.isfinite().all(dim=1)
    return finite_predictions(joined, y, finite) == y, ~finite


def _is_flags(value: object, y: Tensor) -> bool:
    """Whether ``value`` is one bool per sample of ``y``."""
    return isinstance(value, Tensor) and value.dtype == torch.bool and value.shape == y.shape


def _judged(judge: Callable[[Tensor, Tensor], Tensor | Verdict], inputs: Tensor,
            y: Tensor) -> tuple[Tensor, Tensor | None]:
    """``judge``'s verdict on ``inputs``: which samples are correct (a float verdict of ones counted every sample
    correct) and, from a :class:`~attacks.verdicts.Verdict`, which had non-finite logits (``None``: not said)."""
    out = judge(inputs, y)
    if isinstance(out, Verdict):
        pred, non_finite = out.pred, out.non_finite
        if not (isinstance(pred, Tensor) and pred.shape == y.shape) or not (
                non_finite is None or _is_flags(non_finite, y)):
            raise AttackContractError(f"noise: verdict returned a Verdict whose pred or non_finite is not one entry "
                                      f"per sample [{len(y)}] (non_finite: bool)")
        return pred == y, non_finite
    if not _is_flags(out, y):
        got = f"{str(out.dtype).replace('torch.', '')} {list(out.shape)}" if isinstance(out, Tensor) else \
            type(out).__name__
        raise AttackContractError(f"noise: verdict returned {got}, expected a bool tensor [{len(y)}] (one per sample)")
    return out, None


def run_noise_probe(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    kind: str | NoiseProbe,
    levels: Sequence[float] | None = None,
    draws: int = DEFAULT_NOISE_DRAWS,
    seed: int = 0,
    batch_size: int = 256,
    bounds: tuple[float, float] = (0.0, 1.0),
    progress: bool = False,
    verdict: Callable[[Tensor, Tensor], Tensor | Verdict] | None = None,
    **params: Any,
) -> NoiseProbeResult:
    """Accuracy of ``model`` on ``(x [N, ...], y [N])`` under a noise probe, per level and draw.

    ``kind`` names a probe (extra ``params`` go to it, e.g. ``value=`` for ``numenta``) or is a
    :class:`NoiseProbe`. ``levels`` default to :func:`default_levels`. Runs in eval mode (each module's flag
    restored), without gradients, in batches of ``batch_size``; the noise is generated on ``x.device``.
    ``verdict(inputs [N, ...], y [N]) -> [N] bool``: which inputs the model classifies correctly (default: one
    forward pass each; for a randomized model the runner passes its plurality verdicts, :mod:`attacks.verdicts`,
    drawn as its clean pass: level 0 is then its clean accuracy exactly). It may return an
    :class:`~attacks.verdicts.Verdict` instead (correct: ``pred == y``), whose ``non_finite`` the probe counts in
    ``non_finite_inputs``; bare bools leave that count ``None`` (unknown). ``draws`` defaults to
    :data:`DEFAULT_NOISE_DRAWS`, as a config's does.
    """
    _check_arguments(model, x, y, kind, seed)
    probe = create_noise_probe(kind, **params) if isinstance(kind, str) else kind
    if not isinstance(kind, str) and params:
        raise AttackConfigError("noise: params are only accepted together with a probe name")
    levels = _validate(probe, probe.default_levels() if levels is None else levels, draws, batch_size)
    box = ThreatModel("linf", 0.0, bounds)  # validates the bounds; the eps is irrelevant here
    lo, hi = box.bounds
    check_inputs(x, y, box)
    n = x.shape[0]
    counts = torch.zeros((len(levels), n), dtype=torch.long, device=x.device)
    broken = torch.zeros((len(levels), n), dtype=torch.bool, device=x.device)  # non-finite logits on any draw
    told = True  # every verdict said which inputs had non-finite logits
    draw_acc: list[tuple[float, ...]] = []
    bar = tqdm(total=len(levels) * draws, desc=f"noise {probe.name}", disable=not progress, leave=False)
    with eval_mode(model):
        clean = None

        def judge(inputs: Tensor) -> tuple[Tensor, Tensor | None]:
            return _correct(model, inputs, y, batch_size) if verdict is None else _judged(verdict, inputs, y)

        for li, level in enumerate(levels):
            row = []
            for draw in range(draws):
                if level == 0:
                    clean = judge(x) if clean is None else clean
                    correct, non_finite = clean
                else:
                    gen = torch.Generator(device=x.device)
                    gen.manual_seed(derive_seed(seed, probe.name, level, draw))
                    noisy = _noisy(probe, x, level, gen, (lo, hi))
                    correct, non_finite = judge(noisy)
                counts[li] += correct.long()
                if non_finite is None:
                    told = False
                else:
                    broken[li] |= non_finite
                row.append(int(correct.sum().item()) / n if n else 0.0)
                bar.update(1)
            draw_acc.append(tuple(row))
    bar.close()
    accuracy = tuple(int(c.sum().item()) / (draws * n) if n else 0.0 for c in counts)
    result = NoiseProbeResult(
        kind=probe.name, levels=levels, draws=draws, seed=int(seed), params=probe_params(probe, params), num_samples=n,
        accuracy=accuracy, draw_accuracy=tuple(draw_acc), correct_counts=counts.cpu(),
        non_finite_inputs=tuple(int(flags.sum().item()) for flags in broken) if told else None,
    )
    logger.info("noise %s: accuracy per level %s", probe.name, [round(a, 4) for a in accuracy])
    if result.non_finite_inputs and any(result.non_finite_inputs):
        logger.warning("noise %s: NaN or infinite logits (counted as misclassified) on %s inputs per level %s",
                       probe.name, list(result.non_finite_inputs), list(levels))
    return result
