"""Reading a checkpoint or ``--weights`` file: ``torch.load(weights_only=True)`` (pickled code only with
``allow_pickle``) or, for weights, the safetensors format (:mod:`kwta_robust.safetensors_read`), told apart by the
file's content, with the file's SHA-256 from the same open and each failure as a one-line
:class:`~kwta_robust.errors.CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from kwta_robust.errors import CheckpointError, check_flag, first_line
from kwta_robust.file_read import scan_file
from kwta_robust.safe_paths import is_torch_file
from kwta_robust.safetensors_read import (
    INDEX,
    JSON_TEXT,
    SAFETENSORS,
    check_suffix,
    read_index,
    read_safetensors,
    sniff,
)

logger = logging.getLogger(__name__)
#: :attr:`ReadFile.kind` of a ``torch.save`` file.
TORCH = "torch"


@dataclass(frozen=True)
class ReadFile:
    """What :func:`read_file` read: the decoded ``payload``, the file's hex ``sha256``, its ``kind`` (``"torch"``,
    ``"safetensors"`` or ``"safetensors index"``), for an index each shard's file name, SHA-256 and ``__metadata__``
    and, for a safetensors file, its ``__metadata__`` (``None`` where it has none)."""

    payload: Any
    sha256: str
    kind: str = TORCH
    shards: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] | None = None


def read_file(path: Path, allow_pickle: bool, what: str = "checkpoint", safetensors: bool = False) -> ReadFile:
    """``path`` decoded, with its SHA-256: a safetensors file or index (only where ``safetensors``: a ``--weights``
    file; a kwta-robust checkpoint holds its model's spec, which no safetensors file does) by its content whatever
    its name, anything else by ``torch.load`` (weights_only unless ``allow_pickle``). The file is opened once: its
    digest and its zip members' CRCs come from one read of the handle (:func:`~kwta_robust.file_read.scan_file`),
    which ``torch.load`` then decodes (a multi-GB checkpoint was read in full three times); a safetensors file or
    index, and each shard, is read once (:mod:`kwta_robust.safetensors_read`)."""
    check_flag("allow_pickle", allow_pickle)  # 'no' is true: the file's pickled code would run
    if path.is_dir():
        raise CheckpointError(f"{what} {path}: is a folder; give the checkpoint file (e.g. {path}/model.pt)")
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: file not found; check the path")
    try:
        with open(path, "rb") as handle:
            sniffed = sniff(handle)
            kind = sniffed.kind
            if kind in (SAFETENSORS, INDEX) and not safetensors:
                raise CheckpointError(
                    f"{what} {path}: a {kind} file, not a kwta-robust checkpoint (which holds its model's spec); "
                    f"evaluate it with --model-factory package.module:function --weights {path} (in compare: "
                    f"package.module:function={path})")
            if safetensors:
                check_suffix(path, kind, handle, what)
            elif kind == JSON_TEXT:  # an evaluation record given as CHECKPOINT: torch.load called it corrupt
                raise CheckpointError(
                    f"{what} {path}: a JSON file, not a PyTorch checkpoint (an evaluation record goes to --config, "
                    "which runs the config it stores again); give the .pt file `kwta-robust train` wrote, or a plain "
                    "state_dict as --model-factory package.module:function --weights FILE")
            if sniffed.index is not None:  # an index, read and digested by sniff
                state, shards = read_index(path, sniffed.index, what)
                return ReadFile(state, sniffed.sha256, kind, shards)
            if kind == SAFETENSORS:
                if path.suffix.lower() != ".safetensors":
                    logger.info("%s %s: a safetensors file (by its content), read as one", what, path)
                read = read_safetensors(handle, path, what)
                return ReadFile(read.tensors, read.sha256, kind, metadata=read.metadata)
            scan = scan_file(handle)
            if scan.damaged_member is not None:
                raise CheckpointError(f"{what} {path}: member {scan.damaged_member!r} fails its CRC check (the file "
                                      "is damaged); re-create or re-download it")
            if path.suffix.lower() == ".safetensors":
                logger.warning("%s %s: a PyTorch file despite its .safetensors name; read with torch.load", what, path)
            return ReadFile(_torch_load(handle, path, allow_pickle, what), scan.sha256)
    except OSError as exc:  # no read permission: as torch.load(path) reported it
        raise _unreadable(path, what, exc) from None


#: The global a weights-only load refused, as torch words it: ``Unsupported global: GLOBAL torch.nn...Linear`` for a
#: class, ``unsupported GLOBAL posix.system whose module posix is blocked`` for a blocked module's function (torch
#: 2.6+; a file calling ``os.system`` read "corrupt" before).
_GLOBAL = re.compile(r"unsupported global(?:: GLOBAL)? (\S+)", re.IGNORECASE)


def refused_global(exc: BaseException) -> str | None:
    """The Python global (``module.name``) a weights-only ``torch.load`` refused to unpickle, from its error
    (:data:`_GLOBAL`), or ``None`` where the error names none (a damaged file)."""
    named = _GLOBAL.search(str(exc))
    return None if named is None else named.group(1)


def _torch_load(handle: BinaryIO, path: Path, allow_pickle: bool, what: str) -> Any:
    try:
        return torch.load(handle, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        # Only a well-formed PyTorch file that names Python classes needs pickle; anything else is damaged.
        named = refused_global(exc)
        if not allow_pickle and named is not None and is_torch_file(handle):
            raise CheckpointError(
                f"{what} {path}: the file holds Python objects that need pickle to load (it names "
                f"{named[:80]}; pickle can run code); pass allow_pickle=True (--allow-pickle) only if you "
                "trust its source"
            ) from None
        _refuse_foreign(handle, path, what)
        raise CheckpointError(f"{what} {path}: corrupt or not a checkpoint (not a readable PyTorch file); "
                              "re-create or re-download it") from None
    except Exception as exc:  # zip, EOF, key and runtime errors from a damaged or foreign file
        missing = _missing_code(exc) if allow_pickle else None
        if missing is not None:
            raise CheckpointError(
                f"{what} {path}: the pickled model's code cannot be imported ({missing}); make the code it was saved "
                "with importable (the folder of its module on PYTHONPATH: PYTHONPATH=DIR:$PYTHONPATH kwta-robust ..., "
                "or its package installed), or save model.state_dict() and load it with --model-factory/--weights"
            ) from None
        _refuse_foreign(handle, path, what)
        raise _unreadable(path, what, exc) from None


def _refuse_foreign(handle: BinaryIO, path: Path, what: str) -> None:
    """One line for a file that is neither a ``torch.save`` file nor a damaged zip archive (``PK`` first: a truncated
    checkpoint stays "corrupt"): an empty file, a text file (``KeyError: 101`` and ``EOFError: EOFError`` said
    nothing of either); returns for any other file."""
    handle.seek(0)
    head = handle.read(12)
    handle.seek(0)
    if head.startswith(b"PK") or is_torch_file(handle):
        return
    found = "the file is empty" if not head else f"it starts with {head!r}"
    raise CheckpointError(f"{what} {path}: corrupt or not a checkpoint (not a PyTorch file: {found}, where torch.save "
                          "writes a zip archive); give the file torch.save or kwta-robust train wrote")


#: pickle's words for a class its module no longer defines (renamed or moved since the file was saved).
_NO_ATTRIBUTE = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")


def _missing_code(exc: BaseException) -> str | None:
    """What an unpickling ``torch.load`` could not import — a module not on the path (``ModuleNotFoundError``), a
    module whose own imports fail (``ImportError``: a name its dependency does not define) or a class its module no
    longer defines — or ``None`` for any other error (a damaged file)."""
    if isinstance(exc, ImportError):
        return first_line(exc)
    named = _NO_ATTRIBUTE.match(str(exc)) if isinstance(exc, AttributeError) else None
    return None if named is None else f"module {named.group(2)!r} defines no {named.group(1)!r}"


def _unreadable(path: Path, what: str, exc: BaseException) -> CheckpointError:
    text = first_line(exc)  # the class name where the message is empty: 'EOFError: EOFError' before
    if isinstance(exc, EOFError) and text == type(exc).__name__:
        text = "the file ends early (truncated?)"
    reason = text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"
    return CheckpointError(f"{what} {path}: corrupt or not a checkpoint ({reason}); re-create or re-download it")
