"""Evaluation data from a file: ``--data FILE`` on the command line, ``dataset: {file: PATH}`` in an eval config.

A file holds two arrays:

* ``x`` — ``[N, C, H, W]`` images, either floating point in [0, 1] or ``uint8`` 0..255 (divided by 255);
* ``y`` — ``[N]`` integer class labels (any integer dtype; stored as int64).

Arrays in either byte order are read (a big-endian ``>f4`` holds the same values).

Formats: ``.pt`` — ``torch.save({"x": tensor, "y": tensor}, FILE)``, read with ``torch.load(weights_only=True)``;
``.npz`` — ``numpy.savez(FILE, x=array, y=array)``, read with ``numpy.load(allow_pickle=False)``. Other entries
are ignored. The file is one split: the sample selection (``n_examples``, ``sample_seed``) permutes its N
samples exactly as for a registered set, and the record's indices are positions in the file.

Every problem is one :class:`~kwta_robust.errors.DataError` line naming the file, the entry and the fix: a missing
file, another extension, missing ``x``/``y``, a wrong number of dimensions, an x/y length mismatch, no samples,
an unsupported dtype, float values outside [0, 1] (or NaN), non-integer labels, negative labels, labels at or
above the model's number of classes; an axis of size 0, a meta or nested tensor, a .npy or other file named .npz,
a .pt whose zip members fail their CRC check (torch.load would read a damaged value silently), a symlink loop.

The number of classes is the model's (the width of its output, :func:`model_num_classes`); the config keeps the
path and the file's SHA-256, so the record names both and a changed file cannot resume an old record; the config
hash names the SHA-256 only (:mod:`kwta_robust.config_digest`), so the same file moved is the same evaluation.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Mapping, Sequence

import numpy as np
import torch
from pydantic import BeforeValidator
from torch import Tensor, nn

from attacks.base import eval_mode
from kwta_robust.data import TensorData
from kwta_robust.configio import Invalid, config_class, config_field, parse
from kwta_robust.description_notes import noted_description
from kwta_robust.errors import ConfigError, DataError, first_line, is_out_of_memory
from kwta_robust.file_read import scanned
from kwta_robust.model_checks import USER_ERRORS, other_precision, unwrap_advice
from kwta_robust.model_probes import batch_statistics_layers
from kwta_robust.safe_paths import is_torch_file, shown_path
from kwta_robust.snapshot import ModelSnapshot, kept_or_restored, tensors_put_back

SUFFIXES: tuple[str, ...] = (".pt", ".npz")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
#: Unsigned types beyond uint8: torch has few operations for them, so they are read through NumPy.
WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)
NPY_MAGIC = b"\x93NUMPY"


def data_where(path: Path) -> str:
    """``--data PATH`` as the start of an error line: a path holding a control character (a newline would split the
    line) is shown escaped, as Python writes it."""
    return f"--data {shown_path(path)}"


def _path(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected the path of a .pt or .npz file, got {value!r}")
    return value


def _sha256(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or len(value) != 64
                              or any(c not in "0123456789abcdef" for c in value.lower())):
        raise Invalid(f"expected 64 hex digits (sha256sum FILE), got {value!r}")
    return None if value is None else value.lower()


@config_class(frozen=True, prefix="dataset")
class DataFileSpec:
    """``dataset: {file: PATH, sha256: HEX}`` — ``sha256`` pins the content (``None``: filled in when read)."""

    file: Annotated[str, BeforeValidator(_path)] = config_field(hint="the path of a .pt or .npz file")
    sha256: Annotated[str | None, BeforeValidator(_sha256)] = None

    @classmethod
    def from_dict(cls, data: Any) -> "DataFileSpec":
        return parse(cls, data)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256}

    def resolved(self, base: Path | None) -> "DataFileSpec":
        """The spec with ``file`` made absolute (relative paths are taken from ``base``, else the working folder)."""
        path = Path(self.file).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        try:
            return DataFileSpec(file=str(path.resolve()), sha256=self.sha256)
        except (RuntimeError, OSError):  # RuntimeError (Python < 3.13) or OSError ELOOP: links pointing at each other
            raise DataError(f"{data_where(path)}: a symlink loop; point --data at the file itself") from None


def _check_file(path: Path, where: str) -> None:
    if path.is_dir():
        raise DataError(f"{where}: is a folder; give the .pt or .npz file holding x and y")
    if not path.is_file():
        raise DataError(f"{where}: file not found; check the path")


def _read_npz(handle: BinaryIO, where: str) -> Mapping[str, Any]:
    if not zipfile.is_zipfile(handle):  # np.load would read a .npy alone, or try pickle on any other bytes
        handle.seek(0)
        if handle.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise DataError(f"{where}: holds one .npy array, not an .npz archive; save x and y together: "
                            "numpy.savez(FILE, x=x, y=y)")
        raise DataError(f"{where}: not a readable .npz file (not a zip archive); re-create it with numpy.savez")
    handle.seek(0)
    with np.load(handle, allow_pickle=False) as npz:  # read x and y; other entries are only named
        return {k: (npz[k] if k in ("x", "y") else None) for k in npz.files}


def _read_arrays(path: Path) -> tuple[Mapping[str, Any], str]:
    """The file's entries and its SHA-256, from one open of the file: the digest (and a .pt's zip CRC check) in one
    read of the handle that ``torch.load``/``numpy.load`` then decodes (:func:`~kwta_robust.file_read.scan_file`)."""
    where = data_where(path)
    _check_file(path, where)
    if path.suffix not in SUFFIXES:
        raise DataError(f"{where}: unsupported extension {path.suffix!r}; save x and y as .pt "
                        "(torch.save({'x': x, 'y': y}, FILE)) or .npz (numpy.savez(FILE, x=x, y=y))")
    try:  # a .npz's CRCs are checked by numpy.load's zipfile as it reads them
        with scanned(path, check_crc=path.suffix == ".pt") as (handle, scan):
            if path.suffix == ".npz":
                return _decode_npz(handle, where), scan.sha256
            if scan.damaged_member is not None:  # torch.load does not check the CRCs: a flipped bit would be read
                raise DataError(f"{where}: member {scan.damaged_member!r} fails its CRC check (the file is damaged); "
                                "re-create it with torch.save")
            return _decode_pt(handle, where), scan.sha256
    except OSError as exc:  # no read permission
        raise DataError(f"{where}: cannot read it ({exc.strerror or type(exc).__name__}); check its permissions") \
            from None


def _decode_npz(handle: BinaryIO, where: str) -> Mapping[str, Any]:
    try:
        return _read_npz(handle, where)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{where}: an array needs pickle (object dtype); "
                            "store x and y as numeric arrays") from None
        raise DataError(f"{where}: not a readable .npz file ({exc})") from None
    except MemoryError:  # a header's shape is read before the data: a few bytes can declare terabytes
        raise DataError(f"{where}: an array's header declares more values than fit in memory; the file is "
                        "damaged or not a data file, re-create it with numpy.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: not a readable .npz file ({type(exc).__name__}); "
                        "re-create it with numpy.savez") from None


def _decode_pt(handle: BinaryIO, where: str) -> Mapping[str, Any]:
    if not is_torch_file(handle):  # random bytes: torch's weights-only unpickler would say it needs pickle
        raise DataError(f"{where}: corrupt or not a data file (not a readable PyTorch file); save x and y with "
                        "torch.save({'x': x, 'y': y}, FILE)")
    try:
        payload = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise DataError(f"{where}: holds Python objects (e.g. NumPy arrays) that need pickle; save tensors: "
                            "torch.save({'x': torch.as_tensor(x), 'y': torch.as_tensor(y)}, FILE)") from None
        raise DataError(f"{where}: corrupt or not a data file (not a readable PyTorch file); re-create it with "
                        "torch.save") from None
    except Exception as exc:  # zip/EOF errors of a damaged or foreign file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: cannot read it with torch.load(weights_only=True) ({reason}); save plain tensors: "
                        "torch.save({'x': x, 'y': y}, FILE)") from None
    if not isinstance(payload, Mapping):
        raise DataError(f"{where}: expected a dict with 'x' and 'y', found {type(payload).__name__}")
    return payload


def _as_tensor(value: Any, name: str, where: str) -> Tensor:
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DataError(f"{where}: {name} has dtype {value.dtype}; store numbers")
        if not value.dtype.isnative:  # big-endian ('>f4'): torch reads native byte order only; same values
            value = value.astype(value.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Tensor):
        if value.is_meta:  # torch cannot copy it anywhere: "Cannot copy out of meta tensor"
            raise DataError(f"{where}: {name} is on the meta device (a shape without values); give the tensor that "
                            f"holds the {'images' if name == 'x' else 'labels'}")
        if value.is_nested:
            raise DataError(f"{where}: {name} is a nested tensor; stack the images into one [N, C, H, W] tensor "
                            "(torch.stack)")
        value = value.detach().cpu()
        return value.to_dense() if value.layout != torch.strided else value  # saved with x.to_sparse(): same values
    raise DataError(f"{where}: {name} is a {type(value).__name__}; store a tensor or numeric array")


def _images(x: Tensor, where: str) -> Tensor:
    if x.ndim != 4:
        hint = " (add a channel axis: x[:, None])" if x.ndim == 3 else ""
        raise DataError(f"{where}: x must be [N, C, H, W], got shape {tuple(x.shape)}{hint}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        raise DataError(f"{where}: x of shape {tuple(x.shape)} looks channels-last [N, H, W, C]; "
                        "store x.permute(0, 3, 1, 2) (numpy: x.transpose(0, 3, 1, 2))")
    if x.numel() == 0:  # [N, C, 0, W]: no value to check the range of, nothing a model can take
        raise DataError(f"{where}: x of shape {tuple(x.shape)} holds no pixels (an axis of size 0); give images "
                        "[N, C, H, W] with C, H and W >= 1")
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.dtype not in FLOAT_DTYPES:
        raise DataError(f"{where}: x has dtype {str(x.dtype).replace('torch.', '')}; use floats in [0, 1] or "
                        "uint8 0..255")
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{where}: x holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0:  # 0..255 images are never negative: these were normalized (x - mean) / std before saving
        raise DataError(f"{where}: float x must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}] (normalized by "
                        "mean/std?); store the raw images in [0, 1] (x * std + mean) and normalize inside the model")
    if hi > 1.0:
        raise DataError(f"{where}: float x must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]; divide 0..255 "
                        "images by 255 (or store them as uint8)")
    return x


def _labels(y: Tensor, n: int, num_classes: int | None, where: str) -> Tensor:
    if y.dtype in WIDE_UNSIGNED:
        y = _wide_unsigned_labels(y, where)
    if y.dtype not in INT_DTYPES:
        raise DataError(f"{where}: y has dtype {str(y.dtype).replace('torch.', '')}; labels must be integers "
                        "(e.g. y.astype('int64'))")
    if y.ndim != 1:
        raise DataError(f"{where}: y must be [N] class indices, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise DataError(f"{where}: x holds {n} samples but y holds {y.shape[0]} labels")
    y = y.to(torch.int64)
    if int(y.min()) < 0:
        raise DataError(f"{where}: negative label {int(y.min())}; labels are class indices 0..K-1")
    if num_classes is not None:
        check_labels_fit(y, num_classes, where)
    return y


def _wide_unsigned_labels(y: Tensor, where: str) -> Tensor:
    """uint16/32/64 labels as int64 (through NumPy: torch has few operations for these types)."""
    values = y.numpy()
    if values.size and int(values.max()) > torch.iinfo(torch.int64).max:
        raise DataError(f"{where}: label {int(values.max())} does not fit int64; labels are class indices 0..K-1")
    return torch.from_numpy(values.astype(np.int64))


def check_labels_fit(y: Tensor, num_classes: int, where: str) -> None:
    """Labels ``y`` ``[N]`` (non-negative) must be classes of a model with ``num_classes`` outputs: one
    :class:`DataError` line starting with ``where`` otherwise."""
    if int(y.max()) >= num_classes:
        raise DataError(f"{where}: label {int(y.max())} but the model has {num_classes} classes (labels 0.."
                        f"{num_classes - 1}); check the labels or the model")


def load_data_file(path: str | Path, num_classes: int | None = None) -> TensorData:
    """Read and check ``x``/``y`` from ``path`` (see the module docstring) as :class:`TensorData` named by the
    path. ``num_classes``: the model's, to check the labels against (``None``: ``max(y) + 1``)."""
    return read_data_file(path, num_classes)[0]


def read_data_file(path: str | Path, num_classes: int | None = None,
                   pinned: str | None = None) -> tuple[TensorData, str]:
    """:func:`load_data_file` and the file's SHA-256 from the same read (the file is opened once); ``pinned``: the
    digest the config pins, which the file must have (:class:`DataError` otherwise)."""
    path = Path(path)
    where = data_where(path)
    _check_moved(path, pinned)
    arrays, digest = _read_arrays(path)
    check_pinned(path, digest, pinned)
    missing = [k for k in ("x", "y") if arrays.get(k) is None]
    if missing:
        found = ", ".join(sorted(map(str, arrays))) or "nothing"
        raise DataError(f"{where}: no {missing[0]!r} entry (found {found}); store images as 'x' and labels as 'y'")
    data = data_from_arrays(arrays["x"], arrays["y"], str(path), num_classes, where,
                            memory_fix="save only the samples to evaluate in a smaller file")
    return data, digest


def check_pinned(path: Path, digest: str, pinned: str | None) -> None:
    """The file at ``path`` read with ``digest`` is the one the config pins (``pinned``; ``None`` pins nothing)."""
    if pinned is not None and pinned != digest:
        raise DataError(f"dataset.sha256: {path} has sha256 {digest}, the config pins {pinned}; the file "
                        "changed — use the pinned file or update the pin")


def data_from_arrays(x: Any, y: Any, name: str, num_classes: int | None = None, where: str = "data", *,
                     memory_fix: str = "pass only the samples to evaluate") -> TensorData:
    """``x`` (``[N, C, H, W]``, floats in [0, 1] or uint8 0..255) and ``y`` (``[N]`` integer labels), tensors or
    NumPy arrays, checked as a data file's (one :class:`DataError` line starting with ``where``) and held as
    :class:`TensorData` named ``name``: float32 on the CPU, int64 labels, ``indices`` the positions 0..N-1.
    ``num_classes``: the model's, to check the labels against (``None``: ``max(y) + 1``)."""
    x = _as_tensor(x, "x", where)
    if x.ndim >= 1 and x.shape[0] == 0:
        raise DataError(f"{where}: x holds no samples")
    try:
        x = _images(x, where)
    except (MemoryError, RuntimeError) as exc:  # the whole set becomes float32: 4x a uint8 set's size
        if not is_out_of_memory(exc):
            raise
        gib = x.numel() * 4 / 2**30
        raise DataError(f"{where}: out of memory holding its {x.shape[0]} images as float32 ({gib:.1f} GiB; "
                        f"{first_line(exc)}); {memory_fix}") from None
    y = _labels(_as_tensor(y, "y", where), int(x.shape[0]), num_classes, where)
    classes = num_classes if num_classes is not None else int(y.max()) + 1
    return TensorData(x.contiguous(), y, name, int(classes), torch.arange(len(y), dtype=torch.long))


@torch.no_grad()
def model_num_classes(model: nn.Module, sample: Tensor, where: str = "data") -> int:
    """Width of the model's output for ``sample`` (``[1, C, H, W]``): one forward pass in eval mode without
    gradients, every module's train/eval flag and every parameter and buffer put back after (a model in train mode
    would otherwise update its BatchNorm statistics or kWTA duty cycles; one that counts its calls in eval mode is
    refused by the runner's probe, :func:`kwta_robust.model_checks.probe_model`, as it was handed over). A forward
    that flips a ``requires_grad`` flag or adds a hook is put back and refused
    (:class:`~kwta_robust.snapshot.ModelChangedError`); one output column is refused (a binary model gives 2)."""
    device = next((p.device for p in model.parameters()), sample.device)
    before = ModelSnapshot.capture(model)
    try:
        with eval_mode(model), torch.no_grad(), tensors_put_back(model):
            out = model(sample.to(device))
    except USER_ERRORS as exc:
        if is_out_of_memory(exc):
            raise
        reason = f"{type(exc).__name__}: {first_line(exc)}"[:200]
        precision = other_precision(model, sample)
        if precision is not None:  # model.half() given float32 images: the dtype, not the shape, is the cause
            raise DataError(f"{where}: the model's parameters are {precision} but the data are "
                            f"{str(sample.dtype).removeprefix('torch.')} ({reason}); cast the input first in forward "
                            f"(x = x.to(torch.{precision})) or evaluate the model in float32 (model.float())") from None
        norms = batch_statistics_layers(model)
        if norms:  # fails on one sample: batch norm on batch statistics (probe_model's check_runs_alone)
            reason += (f"; batch norm {', '.join(map(repr, norms))} normalizes with batch statistics in eval mode "
                       "(track_running_stats=False), so give it running statistics")
        raise DataError(f"{where}: the model cannot take inputs of shape {tuple(sample.shape[1:])} ({reason}); "
                        "check that the data and the model match") from None
    kept_or_restored(model, before, f"{where}: one forward pass in eval mode")
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != sample.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise DataError(f"{where}: the model should return logits [N, classes] for these inputs, got {shape}"
                        f"{unwrap_advice(out)}")
    if out.shape[1] < 2:
        raise DataError(f"{where}: the model returns 1 output column, expected logits [N, classes] with at least 2 "
                        "classes; return a binary model's single logit z as two (torch.cat([-z, z], dim=1))")
    return int(out.shape[1])


def parse_dataset(value: Any) -> tuple[str, DataFileSpec | None]:
    """The ``dataset`` key of an eval config: a registry name, or ``{file: PATH, sha256: HEX}`` (then the name
    is the path)."""
    if isinstance(value, Mapping):
        spec = DataFileSpec.from_dict(value)
        return spec.file, spec
    if not isinstance(value, str) or not value:
        raise ConfigError(f"dataset: expected a registry name (e.g. mnist5k) or {{file: PATH}}, got {value!r}")
    return value, None


def resolve_relative(data: Mapping[str, Any], base: Path) -> dict:
    """A config mapping whose ``dataset: {file: ...}`` path, if relative, is taken from ``base`` (the YAML's folder)."""
    if isinstance(data.get("dataset"), Mapping):
        return {**data, "dataset": DataFileSpec.from_dict(data["dataset"]).resolved(base).to_dict()}
    return dict(data)


def with_data_file(cfg: Any, path: str) -> Any:
    """``cfg`` (an :class:`~kwta_robust.config.EvalConfig`) evaluating the file ``path`` (``--data``): the file
    replaces the config's data set, split and data root, and its description (which names the config's data set,
    "200 mnist5k images") says so: ``(data from --data FILE)``."""
    spec = DataFileSpec(file=path).resolved(None)
    described = noted_description(cfg.description, data_file=True)
    return type(cfg).from_dict({**cfg.to_dict(), "dataset": spec.to_dict(), "split": "test", "data_root": None,
                                "description": described})


def check_data_file(cfg: Any) -> None:
    """Before any work: ``cfg``'s data file (if any) is a file (a one-line :class:`DataError` otherwise); it is read,
    and its digest checked against a pinned one, once, with the model (:func:`pinned_eval_data`)."""
    if cfg.data_file is not None:
        path = Path(cfg.data_file.file)
        _check_moved(path, cfg.data_file.sha256)
        _check_file(path, data_where(path))


def _check_moved(path: Path, pinned: str | None) -> None:
    """A file a config pins (``pinned``: its sha256; a record's stored config, given as ``--config``, pins the file
    its run read, at the path it read it) that is not at ``path``: one line naming ``--data FILE``, the fix on a
    machine where the file sits elsewhere."""
    if pinned is not None and not path.exists():
        raise DataError(f"{data_where(path)}: file not found; the config names this path and pins the file's sha256 "
                        f"({pinned[:12]}...): give the file where it is now with --data FILE (a moved or copied file "
                        "with that sha256 is the same evaluation)")


def pin_data_file(cfg: Any, digest: str | None = None) -> Any:
    """``cfg`` with its data file's SHA-256 filled in (``digest``: already computed from the read of the data, else
    the file is hashed); a pinned ``sha256`` that differs is a :class:`DataError`."""
    from kwta_robust.checkpoint import file_sha256

    spec = cfg.data_file
    if spec is None:
        return cfg
    path = Path(spec.file)
    if digest is None:
        _check_file(path, data_where(path))
        digest = file_sha256(path)
    check_pinned(path, digest, spec.sha256)
    return type(cfg).from_dict({**cfg.to_dict(), "dataset": {"file": spec.file, "sha256": digest}})


def eval_data_from_file(spec: DataFileSpec, models: Sequence[nn.Module]) -> TensorData:
    """The file's samples, with the number of classes of ``models`` (they must agree) and labels checked
    against it."""
    return pinned_eval_data(spec, models)[0]


def pinned_eval_data(spec: DataFileSpec, models: Sequence[nn.Module]) -> tuple[TensorData, str]:
    """:func:`eval_data_from_file` and the file's SHA-256, from one read of the file; a ``spec.sha256`` that
    differs is a :class:`DataError`."""
    if not models:
        raise ValueError("eval_data_from_file: the models are needed to know the number of classes")
    data, digest = read_data_file(spec.file, pinned=spec.sha256)
    where = data_where(Path(spec.file))
    classes = sorted({model_num_classes(m, data.x[:1], where) for m in models})
    if len(classes) > 1:
        raise DataError(f"{where}: the models disagree on the number of classes ({classes})")
    _labels(data.y, len(data), classes[0], where)
    return replace(data, num_classes=classes[0]), digest
