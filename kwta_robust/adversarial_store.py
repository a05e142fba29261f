"""``--save-adversarial``: clean and adversarial inputs with labels and predictions, as one tensors-only ``.pt``
(``torch.load(..., weights_only=True)``).

Keys: ``x``, ``y``, ``indices``, ``pred_clean``, per unit ``adv/<key>``, ``pred/<key>``, ``flags/<key>``
(:func:`unit_key`), and :data:`STORE_MARKER` (its format version), by which
:func:`kwta_robust.safe_paths.file_kind` tells a store from the user's own weights without unpickling it.

Each finished (attack, norm, eps) unit is written at once, atomically, to its own file in the folder beside the
store (:func:`parts_folder`, ``adv.pt.parts/``, with the clean tensors in ``clean.pt``); when the evaluation
completes, :meth:`AdversarialStore.close` joins them with the store's earlier units into ``adv.pt`` and removes the
folder. So a run writes each unit about twice, not the whole file after every unit (20 units of 5,000 CIFAR-10-sized
inputs: 2.4 GiB instead of 13.2 GiB), and holds only the clean tensors in memory (the files are read memory-mapped).
An interrupted run leaves its units in the folder; re-running the command (resume) keeps them."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from attacks.base import ThreatModel, format_eps
from attacks.cascade import AttackOutcome
from kwta_robust.errors import ConfigError
from kwta_robust.results import RecordError, atomic_write
from kwta_robust.safe_paths import STORE_MARKER as MARKER_BYTES
from kwta_robust.safe_paths import (check_not_overwriting, check_output_file, check_path_type, resolve_path,
                                    zip_member_failing_crc)

logger = logging.getLogger(__name__)

#: The key naming the file an adversarial store (value: the format version, a tensor like every other value).
STORE_MARKER = MARKER_BYTES.decode()
STORE_VERSION = 1
CLEAN_PART = "clean.pt"


def unit_key(label: str, norm: str, eps: float) -> str:
    """The store's key of one (attack label, norm, eps) unit: ``label|norm|eps``."""
    return f"{label}|{norm}|{format_eps(eps)}"


def store_path(path: Any, out_path: Any = None) -> Path | None:
    """``save_adversarial`` checked as ``evaluate --save-adversarial`` is (``None``: no store): a path (str or
    ``os.PathLike``) of a file that can be written, not ``out_path``, and no file of another kind (the user's own
    weights) that the store would replace. A one-line :class:`~kwta_robust.errors.ConfigError` otherwise."""
    if path is None:
        return None
    checked = check_path_type(path, "save_adversarial")
    check_output_file(path, "save_adversarial")  # as given: '' is an empty path, not the folder '.'
    if isinstance(out_path, (str, os.PathLike)) and str(out_path) and \
            resolve_path(out_path, "out_path") == resolve_path(checked, "save_adversarial"):
        raise ConfigError(f"save_adversarial: {path} is also given as out_path; the output would overwrite it, use "
                          "another path")
    check_not_overwriting(checked, "adversarial store", "save_adversarial", only_own=True)
    return checked


def record_units(record: Any) -> dict[str, tuple[str, float, list[int]]]:
    """The units an :class:`~kwta_robust.results.EvalRecord` holds, by :func:`unit_key`: (norm, eps, flags)."""
    return {unit_key(r.label, r.norm, r.eps): (r.norm, r.eps, list(r.flags)) for r in record.results}


def _contradiction(tensors: Mapping[str, Tensor], key: str, unit: tuple[str, float, Sequence[int]], x: Tensor,
                   y: Tensor) -> str | None:
    """What in the stored unit ``key`` contradicts the record's ``unit`` (norm, eps, flags) on the samples ``x``,
    ``y``, else ``None``: its flags, an input outside the eps ball or [0, 1], a prediction that is not its flag."""
    norm, eps, flags = unit
    adv, pred, saved = (tensors.get(f"{kind}/{key}") for kind in ("adv", "pred", "flags"))
    if saved is None or saved.shape != (len(flags),) or saved.tolist() != list(flags):
        return "other flags than the record's"
    if adv is None or adv.shape != x.shape or not adv.is_floating_point() or \
            not bool(ThreatModel(norm, eps).contains(adv.float(), x.float()).all()):
        return "an input outside its eps ball or [0, 1]"
    attacked = saved >= 0
    if pred is None or pred.shape != y.shape or pred.is_floating_point() or \
            not torch.equal(pred < 0, ~attacked) or not torch.equal((pred == y)[attacked], saved[attacked] == 1):
        return "predictions that are not its flags"
    return None


def parts_folder(path: str | Path) -> Path:
    """The folder the units of a run in progress are written to: ``adv.pt.parts`` beside ``adv.pt``."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _load(path: Path, verify: bool = False) -> dict[str, Tensor]:
    """The store or part at ``path``, memory-mapped; ``verify``: its values checked against their zip CRCs first
    (torch.load does not: a flipped bit would be joined into the new store silently)."""
    damaged = zip_member_failing_crc(path) if verify else None
    if damaged is not None:
        raise RecordError(f"--save-adversarial: {path}: member {damaged!r} fails its CRC check (the file is damaged); "
                          "use a new path or --no-resume")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a corrupt file: say which, do not guess
        raise RecordError(f"--save-adversarial: cannot read {path} ({type(exc).__name__}); use a new path") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--save-adversarial: {path} holds other samples; use a new path or --no-resume")
    return loaded


def _check_parts_folder(parts: Path) -> None:
    """:func:`parts_folder` is a folder or not there yet; a one-line ConfigError otherwise."""
    if parts.exists() and not parts.is_dir():
        raise ConfigError(f"--save-adversarial: {parts} is a file, where the run keeps its units until it "
                          "completes; move that file or choose another path")


def check_store(path: str | Path, x: Tensor, y: Tensor, indices: Tensor, resume: bool,
                finished: Mapping[str, tuple[str, float, Sequence[int]]]) -> set[str]:
    """What :class:`AdversarialStore` refuses of the store at ``path`` for the samples ``x``, ``y`` (``resume``: its
    units checked against ``finished``, the record's), read and never changed (``evaluate --dry-run``): the run's
    one-line error, else the keys of the units it holds (:func:`unit_key`; a run keeping a unit it lacks attacks
    that unit again for its inputs)."""
    if resume:  # only reads: the file and its parts, memory-mapped
        return AdversarialStore(path, x, y, indices, torch.zeros_like(y), True, finished).keys
    _check_parts_folder(parts_folder(path))  # the run removes the parts it wrote (not done here)
    return set()


class AdversarialStore:
    """Clean and adversarial inputs with labels and predictions: each unit saved when it finishes (in
    :func:`parts_folder`), all of them joined into one tensors-only ``.pt`` by :meth:`close`."""

    def __init__(self, path: str | Path, x: Tensor, y: Tensor, indices: Tensor, pred_clean: Tensor, resume: bool,
                 finished: Mapping[str, tuple[str, float, Sequence[int]]] | None = None):
        """``finished``: the units (:func:`record_units`) of the record this run resumed: each of the store's own
        units must be one of them (an interrupted run's parts may hold one more), its flags the record's, its inputs
        in their eps ball and [0, 1], its predictions its flags; else the store is refused. ``None``: unchecked."""
        self.path = Path(path)
        self.parts = parts_folder(self.path)
        _check_parts_folder(self.parts)
        self.clean: dict[str, Tensor] = {STORE_MARKER: torch.tensor(STORE_VERSION), "x": x.detach().cpu(),
                                         "y": y.detach().cpu(), "indices": indices.detach().cpu(),
                                         "pred_clean": pred_clean.detach().cpu()}
        self.keys: set[str] = set()
        self.extends_file = False  # the units already in self.path belong to this run's samples (resumed)
        if not resume:
            self._drop_parts()
        elif self.path.is_file():
            saved = _load(self.path, verify=True)
            self._check_samples(self.path, saved)
            self.extends_file = True
            self.keys |= self._checked_units(self.path, saved, finished, whole=True)
        if resume and (self.parts / CLEAN_PART).is_file():  # a run stopped before it was written wrote no unit
            self._check_samples(self.parts / CLEAN_PART, _load(self.parts / CLEAN_PART, verify=True))
        self._part_files = sorted(self.parts.glob("unit-*.pt")) if self.parts.is_dir() else []
        for part in self._part_files:
            self.keys |= self._checked_units(part, _load(part, verify=True), finished, whole=False)

    def _checked_units(self, where: Path, tensors: dict[str, Tensor],
                       finished: Mapping[str, tuple[str, float, Sequence[int]]] | None, whole: bool) -> set[str]:
        """The units in ``tensors`` (the store's file if ``whole``, else one part), each one the record holds as
        the record says (:func:`_contradiction`); the store's file holds no unit the record does not."""
        keys = self._unit_keys(tensors)
        for key in sorted(keys) if finished is not None else []:
            if key in finished:
                why = _contradiction(tensors, key, finished[key], self.clean["x"], self.clean["y"])
            else:
                why = "no result of the record" if whole else None
            if why is not None:
                raise ConfigError(f"--save-adversarial: {where} holds adversarial inputs this run's record does not "
                                  f"({key}: {why}); use a new path or --no-resume")
        return keys

    @staticmethod
    def _unit_keys(tensors: dict[str, Tensor]) -> set[str]:
        return {name.removeprefix("adv/") for name in tensors if name.startswith("adv/")}

    def _check_samples(self, where: Path, saved: dict[str, Tensor]) -> None:
        if "x" not in saved or not torch.equal(saved["x"], self.clean["x"]):
            raise ConfigError(f"--save-adversarial: {where} holds other samples; use a new path or --no-resume")

    def _drop_parts(self) -> None:
        """Remove the parts folder's files this store writes (and temp files a killed write left), then the folder
        if that emptied it: nothing else in it is touched."""
        if not self.parts.is_dir():
            return
        for name in (CLEAN_PART, "unit-*.pt", ".*.tmp"):
            for file in self.parts.glob(name):
                file.unlink()
        with contextlib.suppress(OSError):  # not empty: someone else's files stay
            self.parts.rmdir()

    def has(self, key: str) -> bool:
        return key in self.keys

    def put(self, key: str, outcome: AttackOutcome, flags: Tensor) -> None:
        """Write one finished unit to its own file (atomically), the clean tensors first if not yet there."""
        if not self._part_files:
            atomic_write(self.parts / CLEAN_PART, lambda fh: torch.save(self.clean, fh))
        unit = {f"adv/{key}": outcome.x_adv.detach().cpu(), f"pred/{key}": outcome.pred.detach().cpu(),
                f"flags/{key}": flags.detach().cpu()}
        number = int(self._part_files[-1].stem.removeprefix("unit-")) + 1 if self._part_files else 0
        part = self.parts / f"unit-{number:06d}.pt"
        atomic_write(part, lambda fh: torch.save(unit, fh))
        self._part_files.append(part)
        self.keys.add(key)

    def put_again(self, key: str, outcome: AttackOutcome, flags: Tensor, recorded: Sequence[int]) -> None:
        """Save unit ``key``, which a resumed run without this store finished (its result, ``recorded`` flags, is
        kept) and this run attacked again only for its inputs: with the same seeds it must break the same samples,
        else the store's inputs would not be the record's — a one-line ConfigError, nothing saved."""
        differ = sum(a != b for a, b in zip(flags.tolist(), recorded)) + abs(len(flags) - len(recorded))
        if differ:
            raise ConfigError(f"--save-adversarial: {key} was finished by an earlier run without --save-adversarial; "
                              f"attacked again for its inputs, it gave other flags than the record's on {differ} "
                              "sample(s) (a model or attack that is not deterministic, or another torch thread "
                              "count); re-run with --no-resume to attack every unit afresh")
        self.put(key, outcome, flags)
        logger.info("%s: finished by an earlier run without --save-adversarial; attacked again for its inputs "
                    "(the record's flags; its result kept)", key)

    def close(self, keep: Mapping[str, Any] | None = None) -> None:
        """Join the store's earlier units (a resumed run's) and this run's into ``self.path``, then remove the parts
        folder; a unit written again replaces the earlier one. ``keep``: the record's units (:func:`record_units`):
        a part's unit that is not one of them (an interrupted run's) is left out, with a warning."""
        if not self._part_files:  # no unit written by this run or a stopped one
            if not self.extends_file:  # the clean tensors alone, over an earlier run's file (--no-resume)
                atomic_write(self.path, lambda fh: torch.save(self.clean, fh))
            self._drop_parts()  # a folder a run stopped before its first unit left
            self.extends_file = True
            return

        def write(fh: BinaryIO) -> None:  # the mapped files are released when this returns, before os.replace
            tensors = _load(self.path) if self.extends_file else {}
            for part in self._part_files:
                tensors.update(_load(part))
            stray = sorted(self._unit_keys(tensors) - set(keep)) if keep is not None else []
            if stray:
                logger.warning("--save-adversarial: left out %s, no result of the record", ", ".join(stray))
            drop = {f"{kind}/{key}" for key in stray for kind in ("adv", "pred", "flags")}
            torch.save({**{k: v for k, v in tensors.items() if k not in drop}, **self.clean}, fh)

        atomic_write(self.path, write)
        self._drop_parts()
        self._part_files, self.extends_file = [], True
