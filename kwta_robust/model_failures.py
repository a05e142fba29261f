"""A user's model that fails inside its own code during a run, after passing the checks before it, as one line.

:func:`kwta_robust.model_checks.probe_model` runs the model on two samples and on one; a forward can still raise
later, on a larger batch (a buffer sized for the training batch, ``x.view(64, -1)``) or after some calls. Inside an
attack that is already one line (:class:`attacks.cascade.AttackContractError`); :func:`model_code_failures` does the
same for the runner's own passes (the layout probe, the clean pass, the model probes, the re-classifications, the
noise probes): an exception whose traceback passes through the source file of one of the model's modules, other than
torch's and this package's, is one :class:`~kwta_robust.errors.ConfigError` naming the model, where it was raised
and the fix. Out-of-memory errors (the run's own message), the package's errors and exceptions raised elsewhere (a
bug of ours: its traceback is the report) pass through unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import traceback
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

import attacks
import kwta_robust
from attacks.errors import AttackConfigError
from kwta_robust.errors import ConfigError, KwtaRobustError, first_line, is_out_of_memory

logger = logging.getLogger(__name__)

#: Folders whose files are not a user's model code: torch's and this package's (its own models fail as bugs).
_NOT_USER_CODE = tuple(str(Path(m.__file__).resolve().parent) + os.sep for m in (torch, attacks, kwta_robust))


def model_files(model: nn.Module) -> set[str]:
    """The resolved source files of the classes of ``model``'s modules that lie outside torch and this package."""
    files = set()
    for module in model.modules():
        try:
            source = inspect.getsourcefile(type(module))
        except TypeError:  # a built-in class
            continue
        if source is not None:
            path = str(Path(source).resolve())
            if not path.startswith(_NOT_USER_CODE):
                files.add(path)
    return files


def raised_at(frames: Sequence[traceback.FrameSummary]) -> traceback.FrameSummary:
    """The frame a model failure is reported at: the innermost one in the user's code (outside torch and this
    package), where the fix goes even when the exception surfaced in a layer of ours the model called with a bad
    argument; else the innermost outside torch (a bug of ours), else the innermost frame."""
    for excluded in (_NOT_USER_CODE, _NOT_USER_CODE[:1]):
        own = [f for f in frames if not str(Path(f.filename).resolve()).startswith(excluded)]
        if own:
            return own[-1]
    return frames[-1]


@contextlib.contextmanager
def model_code_failures(model: nn.Module, sources: Mapping[str, nn.Module]) -> Iterator[None]:
    """Raise an exception from inside the code of ``model`` or of a transfer source (name → module) as one line
    (module docstring); ``-v`` logs the traceback."""
    models = {"model": model, **{f"transfer source {name}": source for name, source in sources.items()}}
    try:
        yield
    except (KwtaRobustError, AttackConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised unless the model's own code raised it
        if is_out_of_memory(exc):
            raise
        frames = [(str(Path(f.filename).resolve()), f) for f in traceback.extract_tb(exc.__traceback__)]
        label = next((label for label, model in models.items()
                      if model_files(model) & {path for path, _ in frames}), None)
        if label is None:
            raise
        where = raised_at([f for _, f in frames])
        logger.debug("model %s raised", label, exc_info=True)
        raise ConfigError(f"{label}: its forward raised {type(exc).__name__}: {first_line(exc)} (at "
                          f"{where.filename}:{where.lineno}) after passing the checks on one and two samples (a "
                          "larger batch, or a later call, than those); fix the model's code there (-v logs the "
                          "traceback)") from exc
