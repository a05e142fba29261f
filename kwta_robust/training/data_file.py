"""Training on a data file (``kwta-robust train --data FILE``, ``dataset: {file: PATH}`` in a training config).

The file is read and checked by :func:`kwta_robust.datafile.read_data_file`, the reader of evaluate's ``--data``
(same format: ``x`` ``[N, C, H, W]`` floats in [0, 1] or uint8, ``y`` ``[N]`` integer labels; same one-line
:class:`~kwta_robust.errors.DataError` s). Its N samples are split by a seeded permutation
(``torch.randperm(N)`` under ``split_seed``): the first ``round(test_fraction · N)`` are the test split, the rest
the training split; each split keeps the samples' positions in the file as its ``indices``. The number of classes
is ``max(y) + 1`` over the whole file; the model's input normalization is the training split's per-channel mean and
standard deviation. The config returned pins the file's SHA-256, so the checkpoint's ``training.dataset`` names the
file and its content. The test split is written next to the checkpoint, once it is written, as a data file of its
own (:func:`encode_test_split`: ``OUT.test.npz``, ``m.pt.test.npz`` for ``m.pt``; its path and SHA-256 in the
checkpoint's ``test_split_file``), so that ``evaluate --data`` attacks the held-out samples alone: the whole file
holds the training samples too, on which a model's clean and robust accuracy read higher than on data it never saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from kwta_robust.data import TensorData
from kwta_robust.datafile import data_where, read_data_file
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.results import atomic_write
from kwta_robust.safe_paths import check_distinct, file_kind
from kwta_robust.training.config import TrainConfig

logger = logging.getLogger(__name__)


def split_data(data: TensorData, fraction: float, seed: int, where: str) -> tuple[TensorData, TensorData]:
    """``(train, test)`` of ``data``'s N samples: ``round(fraction · N)`` test samples drawn by
    ``torch.randperm(N)`` under ``seed``, the rest for training (each split in file order). Fewer than one test or
    two training samples is a :class:`DataError` (a training batch of one is dropped)."""
    n = len(data)
    n_test = round(n * fraction)
    n_train = n - n_test
    if n_test < 1 or n_train < 2:
        raise DataError(f"{where}: {n} samples are too few for test_fraction {fraction:g} ({n_train} to train on, "
                        f"{n_test} to test on); give a file with more samples, or a test_fraction (--test-fraction) "
                        "that leaves at least 2 training samples and 1 test sample")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values

    def part(idx: Tensor) -> TensorData:
        return TensorData(data.x[idx], data.y[idx], data.name, data.num_classes, data.indices[idx])

    return part(train_idx), part(test_idx)


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images ``x`` ``[N, C, H, W]`` (a constant channel's deviation is
    taken as 1: the model then only shifts it)."""
    mean = x.mean(dim=(0, 2, 3), dtype=torch.float64)
    std = x.to(torch.float64).std(dim=(0, 2, 3), unbiased=False)
    return [float(m) for m in mean], [float(s) if s > 0 else 1.0 for s in std]


def load_file_splits(cfg: TrainConfig) -> tuple[TrainConfig, TensorData, TensorData]:
    """``cfg`` with its data file's SHA-256 pinned, and the file's training and test splits (see the module
    docstring); a ``sha256`` in ``cfg`` that the file does not have is a :class:`DataError`."""
    spec = cfg.data_file
    if spec is None:
        raise ValueError("load_file_splits: the config trains on a registered data set, not a file")
    data, digest = read_data_file(spec.file, pinned=spec.sha256)
    where = data_where(Path(spec.file))
    if data.num_classes < 2:
        raise DataError(f"{where}: every label is {int(data.y.max())}; a classifier needs at least 2 classes "
                        "(labels 0..K-1)")
    train, test = split_data(data, cfg.test_fraction, cfg.split_seed, where)
    missing = sorted(set(range(data.num_classes)) - set(train.y.tolist()))
    if missing:
        logger.warning("%s: %d of the %d classes (labels 0..%d) have no training sample (first: %d)", where,
                       len(missing), data.num_classes, data.num_classes - 1, missing[0])
    pinned = dataclasses.replace(cfg, dataset={"file": spec.file, "sha256": digest})
    return pinned, train, test


def test_split_path(out: Path) -> Path:
    """Where :func:`encode_test_split` writes the test split of a checkpoint written to ``out``: ``OUT.test.npz``,
    named by the checkpoint's whole file name (``runs/my-kwta.pt`` → ``runs/my-kwta.pt.test.npz``), so that two
    checkpoints of one stem in one folder (``m.pt`` and ``m.pth``) do not share, and overwrite, one split."""
    return out.with_name(f"{out.name}.test.npz")


#: The arrays of a test split :func:`write_test_split` writes, by which :func:`check_test_split_path` knows one.
TEST_SPLIT_KEYS = frozenset({"x", "y", "indices"})


def check_test_split_path(out: Path, data_file: str | Path) -> None:
    """Before training: the test split of a checkpoint written to ``out`` (:func:`test_split_path`) may be written.
    It is not the data file trained on (``--data runs/a.test.npz --out runs/a.pt`` would replace the file by a part
    of itself), and a file already there is overwritten only if it is a test split this command wrote (an ``.npz``
    of ``x``, ``y`` and ``indices``; never the user's own file). A one-line :class:`ConfigError` otherwise."""
    path = test_split_path(out)
    check_distinct({"--out (its test split)": path}, {"--data": data_file})
    if not path.is_file():
        return
    if file_kind(path) == "NumPy .npz archive":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if set(npz.files) == TEST_SPLIT_KEYS:
                    return
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # unreadable: not a split train wrote
            pass
    raise ConfigError(f"--out: {path} (where the test split of {out} goes) holds a file that is not a test split "
                      "train wrote; writing it there would destroy the file, choose another --out (or delete it first)")


@dataclasses.dataclass(frozen=True)
class TestSplit:
    """A test split encoded (:func:`encode_test_split`) but not yet written: ``meta`` (``{file, sha256}``) goes into
    the checkpoint's ``test_split_file`` and :meth:`write` writes the file once a checkpoint naming it is written
    (``kwta_robust.training.run``), so a training that fails or is interrupted leaves no split without a
    checkpoint."""

    path: Path
    data: bytes
    samples: int

    @property
    def meta(self) -> dict[str, str]:
        """Its absolute path and SHA-256, as ``evaluate --data`` records them for it."""
        return {"file": str(self.path.resolve()), "sha256": hashlib.sha256(self.data).hexdigest()}

    def write(self) -> None:
        """Write the ``.npz`` at ``path``, atomically."""
        def write(handle: BinaryIO) -> None:
            handle.write(self.data)
        atomic_write(self.path, write)
        logger.info("test split (%d samples) written to %s: evaluate --data %s attacks the held-out samples alone",
                    self.samples, self.path, self.path)


def encode_test_split(test: TensorData, path: Path) -> TestSplit:
    """``test`` ``x`` ``[N, C, H, W]`` (float32, the values training read) and ``y`` ``[N]``, with ``indices`` (their
    positions in the training file), as the bytes of an ``.npz`` to be written at ``path`` (:class:`TestSplit`)."""
    buffer = io.BytesIO()
    np.savez(buffer, x=test.x.detach().cpu().numpy(), y=test.y.detach().cpu().numpy(),
             indices=np.asarray(test.indices))
    return TestSplit(path, buffer.getvalue(), len(test))
