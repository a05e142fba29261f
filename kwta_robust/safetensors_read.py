"""Weights in the safetensors format, told apart from ``torch.save`` files by their content.

A safetensors file (https://github.com/huggingface/safetensors, the format of Hugging Face and timm releases) is an
8-byte little-endian header length N, N bytes of JSON naming each tensor's dtype, shape and byte range, and the raw
values: no pickle, so reading one cannot run code — the same guarantee as ``torch.load(weights_only=True)``, which
the package's checkpoints and ``--weights`` files are read with (pickled code only with ``--allow-pickle``).
:func:`file_kind` tells the kinds apart by their first bytes, never by the name (a ``.pt`` that is safetensors is
read as safetensors; a ``.safetensors`` that is a ``torch.save`` zip is read by ``torch.load``);
:func:`read_safetensors` loads one file with ``safetensors.safe_open(path, "pt", device="cpu")`` (a flat
``{name: Tensor}``, as ``safetensors.torch.load_file`` gives it, normalized afterwards as a ``torch.save``
state_dict is: :func:`kwta_robust.foreign_weights.normalize_state_dict`), and :func:`read_index` the shards a
Hugging Face index (``model.safetensors.index.json``: ``{"weight_map": {name: shard file}}``) lists, each next to the
index. A damaged, truncated or inconsistent file is one line (:class:`~kwta_robust.errors.CheckpointError`) naming
it and the fix.

An index is read and parsed once: its text gives its SHA-256 and its ``weight_map`` (:func:`sniff`). A safetensors
file (or shard) is read through once for its SHA-256 and then memory-mapped by ``safetensors.safe_open`` for its
tensors, so that a multi-GB shard is never held in memory beside its tensors (reading its bytes once and decoding
them would double the peak memory for that time); its header is read and parsed once, by that open, which gives its
tensors and its ``__metadata__`` (a string-to-string map, e.g. ``{"format": "pt"}``), recorded capped:
:func:`recorded_metadata`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Mapping

from torch import Tensor

from kwta_robust.errors import CheckpointError, first_line
from kwta_robust.file_read import BLOCK, scan_file
from kwta_robust.safe_paths import is_torch_file

logger = logging.getLogger(__name__)

#: What :func:`file_kind` returns: a safetensors file, a sharded checkpoint's index, other JSON, anything else.
SAFETENSORS, INDEX, JSON_TEXT, OTHER = "safetensors", "safetensors index", "json", "torch"
#: The largest header the safetensors library reads (100 MB); a larger length is not a safetensors header.
MAX_HEADER = 100_000_000
#: The largest index file read (an index of a 100k-tensor model is a few MB).
MAX_INDEX = 64 << 20
#: The suffix Hugging Face gives a sharded checkpoint's index.
INDEX_SUFFIX = ".index.json"
SAVE_HINT = "safetensors.torch.save_file(model.state_dict(), FILE)"
#: A file's ``__metadata__`` as recorded: at most this many entries (the first by key)...
METADATA_ENTRIES = 50
#: ... each key and value cut to this many characters (followed by ``... (N characters)``, N its full length; keys
#: alike once cut are told apart: ``... (N characters) [2]``, ``[3]``, ...).
METADATA_CHARACTERS = 200


@dataclass(frozen=True)
class Sniffed:
    """What the first read of a weights file found (:func:`sniff`): its ``kind`` and, for an index, its parsed JSON
    (``index``) and the hex SHA-256 of its bytes (``sha256``), from that read (``None`` and empty for other kinds)."""

    kind: str
    index: Mapping[str, Any] | None = None
    sha256: str = ""


@dataclass(frozen=True)
class SafetensorsFile:
    """A safetensors file read once (:func:`read_safetensors`): its ``tensors`` (names as stored, on the CPU), the
    hex SHA-256 of its bytes and its ``__metadata__`` header (``None`` where it has none)."""

    tensors: dict[str, Tensor]
    sha256: str
    metadata: dict[str, str] | None = None


def file_kind(handle: BinaryIO) -> str:
    """Which kind of weights file is open in ``handle`` (binary, seekable; left at its start), by its content: an
    8-byte length of at most :data:`MAX_HEADER` followed by ``{`` is :data:`SAFETENSORS` (perhaps damaged: the
    reader says so), JSON text with a ``weight_map`` mapping is :data:`INDEX`, other JSON :data:`JSON_TEXT`, and
    anything else :data:`OTHER` (for ``torch.load``, which words its own errors)."""
    return sniff(handle).kind


def sniff(handle: BinaryIO) -> Sniffed:
    """:func:`file_kind`'s finding with, for an index, the JSON it parsed and the SHA-256 of the text it read (and of
    any bytes after it), so that an index is read and parsed once; ``handle`` is left at its start."""
    handle.seek(0)
    head = handle.read(9)
    handle.seek(0)
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= MAX_HEADER:
        return Sniffed(SAFETENSORS)
    if head.lstrip()[:1] != b"{":
        return Sniffed(OTHER)
    text = handle.read(MAX_INDEX + 1)
    try:
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        handle.seek(0)
        return Sniffed(OTHER)
    if not (isinstance(parsed, Mapping) and isinstance(parsed.get("weight_map"), Mapping)):
        handle.seek(0)
        return Sniffed(JSON_TEXT)
    digest = hashlib.sha256(text)
    for block in iter(lambda: handle.read(BLOCK), b""):  # white space after the JSON, past the bytes read
        digest.update(block)
    handle.seek(0)
    return Sniffed(INDEX, parsed, digest.hexdigest())


def check_suffix(path: Path, kind: str, handle: BinaryIO, what: str) -> None:
    """A ``.safetensors`` name on a file that is neither safetensors nor a ``torch.save`` file, or a JSON file that is
    no index: one line naming the file and the fix (a ``torch.save`` file under any name is ``torch.load``'s)."""
    if kind == JSON_TEXT:
        raise CheckpointError(f"{what} {path}: a JSON file without a 'weight_map' (not a sharded checkpoint's index); "
                              "give the weights file (torch.save or .safetensors) or the model.safetensors.index.json "
                              "of sharded weights")
    if kind == OTHER and path.suffix.lower() == ".safetensors" and not is_torch_file(handle):
        raise CheckpointError(f"{what} {path}: not a safetensors file (it does not start with an 8-byte header "
                              "length and a JSON header) nor a PyTorch file; the file is damaged or not weights: "
                              f"re-create it with {SAVE_HINT} or re-download it")


def read_safetensors(handle: BinaryIO, path: Path, what: str = "weights") -> SafetensorsFile:
    """The safetensors file open in ``handle`` (at ``path``, for the messages): its SHA-256 (one streamed read of
    the handle, :func:`~kwta_robust.file_read.scan_file`), its tensors on the CPU and its ``__metadata__``, both from
    one ``safetensors.safe_open`` (a memory map: the file is not held in memory beside the tensors, which matters for
    multi-GB shards; its header read and parsed once; names as stored, in the order ``load_file`` gives them); a
    damaged or truncated file, or one holding no tensor, is one line."""
    try:
        from safetensors import safe_open  # noqa: PLC0415 - a dependency only this format needs
    except ImportError:
        raise CheckpointError(f"{what} {path}: reading a safetensors file needs the safetensors package (a dependency "
                              "of kwta-robust): pip install safetensors, or pip install -e . again") from None
    try:
        digest = scan_file(handle, check_crc=False).sha256
        with safe_open(str(path), framework="pt", device="cpu") as mapped:  # as load_file does, and the metadata
            state = {name: mapped.get_tensor(name) for name in mapped.keys()}
            metadata = mapped.metadata()
    except OSError as exc:
        raise CheckpointError(f"{what} {path}: cannot be read ({first_line(exc)}); check its permissions") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError (header, offsets, truncation) or a dtype torch lacks
        raise CheckpointError(f"{what} {path}: a damaged or truncated safetensors file ({first_line(exc)}); "
                              "re-create or re-download it") from None
    if not state:
        raise CheckpointError(f"{what} {path}: the safetensors file holds no tensors; save the model's with "
                              f"{SAVE_HINT}")
    return SafetensorsFile(state, digest, None if metadata is None else dict(metadata))


def recorded_metadata(metadata: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """A file's ``__metadata__`` as the record keeps it: ``{"metadata": {key: value}}`` with at most
    :data:`METADATA_ENTRIES` entries (the first by key; ``"metadata_left_out"``: how many more the file holds) and
    every key and value of more than :data:`METADATA_CHARACTERS` characters cut (``... (N characters)`` after the
    kept ones), so that a file cannot fill the record; ``{}`` without metadata. Two keys alike in length and in their
    kept characters would be one key once cut (the second entry was dropped): each after the first is told apart by
    `` [2]``, `` [3]``, ... (in key order; no uncut key is that long). ``where`` names the file in the log line saying
    what was cut."""
    if metadata is None:
        return {}
    kept: dict[str, str] = {}
    alike: dict[str, int] = {}  # per key as cut, how many keys cut to it so far
    for key in sorted(metadata)[:METADATA_ENTRIES]:
        cut = _cut(str(key))
        alike[cut] = alike.get(cut, 0) + 1
        kept[cut if alike[cut] == 1 else f"{cut} [{alike[cut]}]"] = _cut(str(metadata[key]))
    recorded: dict[str, Any] = {"metadata": kept}
    if len(kept) < len(metadata):
        recorded["metadata_left_out"] = len(metadata) - len(kept)
    if len(kept) < len(metadata) or any(len(k) > METADATA_CHARACTERS or len(v) > METADATA_CHARACTERS
                                        for k, v in metadata.items()):
        logger.info("%s: its __metadata__ (%d entries) is recorded cut to %d entries of at most %d characters",
                    where, len(metadata), METADATA_ENTRIES, METADATA_CHARACTERS)
    return recorded


def _cut(text: str) -> str:
    return text if len(text) <= METADATA_CHARACTERS else f"{text[:METADATA_CHARACTERS]}... ({len(text)} characters)"


def read_index(path: Path, index: Mapping[str, Any],
               what: str = "weights") -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """The state_dict of the sharded checkpoint whose index (``model.safetensors.index.json``, parsed: ``index``,
    :func:`sniff`) lies at ``path``: every shard its ``weight_map`` lists, read once from the index's folder, with
    the file name and SHA-256 of each and its ``__metadata__`` (:func:`recorded_metadata`; ``[{"file": ...,
    "sha256": ...}]``, for the record). A shard missing, outside that folder or not safetensors, and a tensor in
    another shard than the index says (or in none), are one line each."""
    weight_map = index["weight_map"]
    if not weight_map:
        raise CheckpointError(f"{what} {path}: the index's weight_map is empty; give the index written with the "
                              "shards (save_pretrained) or a single weights file")
    shards: dict[str, list[str]] = {}
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{what} {path}: weight_map[{key!r}] is {name!r}, not a shard file name; the index "
                                  "is damaged: re-download it")
        shards.setdefault(name, []).append(key)
    state: dict[str, Tensor] = {}
    digests: list[dict[str, Any]] = []
    for name, keys in shards.items():
        shard = _shard_path(path, name, what)
        with open(shard, "rb") as shard_handle:
            if file_kind(shard_handle) != SAFETENSORS:
                raise CheckpointError(f"{what} {path}: shard {name} is not a safetensors file; only safetensors "
                                      "shards are read (for a pytorch_model.bin.index.json, merge the shards into one "
                                      "torch.save(state_dict, FILE)); re-download it if it should be")
            read = read_safetensors(shard_handle, shard, f"{what} {path}: shard")
        tensors = read.tensors
        stray = next((k for k in tensors if weight_map.get(k) != name), None)
        if stray is not None:
            listed = f"maps it to {weight_map[stray]}" if stray in weight_map else "does not list it"
            raise CheckpointError(f"{what} {path}: shard {name} holds {stray!r}, but the index {listed}; the shards "
                                  "are not this index's: download the index and its shards together")
        lacking = next((k for k in keys if k not in tensors), None)
        if lacking is not None:
            raise CheckpointError(f"{what} {path}: the index lists {lacking!r} in shard {name}, which lacks it; the "
                                  "shards are not this index's: download the index and its shards together")
        state.update(tensors)
        digests.append({"file": name, "sha256": read.sha256, **recorded_metadata(read.metadata, f"{what} {shard}")})
    return state, digests


def _shard_path(index: Path, name: str, what: str) -> Path:
    """Where the shard ``name`` lies: in the index's folder (a relative name without ``..``), and present."""
    parts = [PurePosixPath(name), PureWindowsPath(name)]
    if any(p.is_absolute() or p.drive or ".." in p.parts for p in parts):
        raise CheckpointError(f"{what} {index}: shard {name!r} is not a file name in the index's folder; shards are "
                              "read from beside the index only: fix the index's weight_map")
    shard = index.parent / name
    if not shard.is_file():
        raise CheckpointError(f"{what} {index}: shard {name} listed in its weight_map is missing ({shard}); download "
                              "every shard next to the index")
    return shard
