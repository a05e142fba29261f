"""One pass over an input file before it is decoded: its SHA-256 and the CRC check of its zip members.

A checkpoint, a weights file or a ``--data`` file was opened and read in full three times on loading: once to check
its zip members' CRCs (``torch.load`` does not check them, so a flipped bit in a stored tensor would be read
silently), once by ``torch.load`` and once more for the SHA-256 the record keeps. :func:`scan_file` computes the
digest and the CRCs of the stored (uncompressed) members, the only kind ``torch.save`` writes, in one sequential read
of a handle the caller has opened, which then goes on to ``torch.load`` (or ``numpy.load``): one open, two passes.
A compressed member (another tool's archive) is checked by :mod:`zipfile` in a pass of its own
(:func:`~kwta_robust.safe_paths.zip_member_failing_crc`). What
:func:`~kwta_robust.safe_paths.zip_member_failing_crc` leaves to ``torch.load`` (a member whose local header is
damaged or that ends past the end of the file, an archive :mod:`zipfile` cannot read) is left to it here too.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from kwta_robust.safe_paths import zip_member_failing_crc

#: Bytes read at a time.
BLOCK = 1 << 20
#: The fixed part of a zip local file header: signature, versions, flags, method, times, CRC, sizes, name and extra
#: field lengths (APPNOTE 4.3.7).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"


@contextmanager
def scanned(path: Path, check_crc: bool = True) -> Iterator[tuple[BinaryIO, FileScan]]:
    """``path`` opened once, with :func:`scan_file`'s findings; the handle, at its start, is the decoder's. An
    ``OSError`` (no read permission) is the caller's to word."""
    with open(path, "rb") as handle:
        yield handle, scan_file(handle, check_crc)


@dataclass(frozen=True)
class FileScan:
    """What one read of a file found: the hex ``sha256`` of its bytes and the name of the first zip member whose
    values fail their CRC check (``damaged_member``; ``None`` when every member passes or the file is no zip)."""

    sha256: str
    damaged_member: str | None = None


@dataclass(frozen=True)
class _Member:
    name: str
    start: int
    end: int
    crc: int


def scan_file(handle: BinaryIO, check_crc: bool = True) -> FileScan:
    """The SHA-256 of the file open in ``handle`` (binary, seekable) and, with ``check_crc``, its first zip member
    failing its CRC (see the module docstring); ``handle`` is left at its start for the decoder."""
    stored, compressed = _members(handle) if check_crc else ([], [])
    digest = hashlib.sha256()
    crcs = [0] * len(stored)
    order = sorted(range(len(stored)), key=lambda i: stored[i].start)
    first = 0  # members before it (in ``order``) end before the current block
    handle.seek(0)
    position = 0
    while True:
        block = handle.read(BLOCK)
        if not block:
            break
        digest.update(block)
        view, end = memoryview(block), position + len(block)
        while first < len(order) and stored[order[first]].end <= position:
            first += 1
        for i in order[first:]:
            member = stored[i]
            if member.start >= end:
                break
            if member.end > position:
                crcs[i] = zlib.crc32(view[max(member.start, position) - position:min(member.end, end) - position],
                                     crcs[i])
        position = end
    damaged = next((m.name for m, crc in zip(stored, crcs) if crc != m.crc), None)
    if damaged is None and compressed:
        damaged = zip_member_failing_crc(handle, compressed)
    handle.seek(0)
    return FileScan(digest.hexdigest(), damaged)


def _members(handle: BinaryIO) -> tuple[list[_Member], list[str]]:
    """The archive's stored members whose values lie inside the file (where they start and end, their CRC) and the
    names of its compressed ones, in the archive's order; nothing for a file that is no zip archive :mod:`zipfile`
    can read."""
    try:
        handle.seek(0, 2)
        size = handle.tell()
        with zipfile.ZipFile(handle) as archive:  # reads the central directory only
            infos = archive.infolist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError):
        return [], []
    stored: list[_Member] = []
    compressed: list[str] = []
    for info in infos:
        if info.flag_bits & 0x1:  # encrypted: zipfile cannot check it without the password; left to the decoder
            continue
        if info.compress_type != zipfile.ZIP_STORED:
            compressed.append(info.filename)
            continue
        start = _data_start(handle, info)
        if start is not None and start + info.compress_size <= size:  # one past the end: left to the decoder
            stored.append(_Member(info.filename, start, start + info.compress_size, info.CRC))
    return stored, compressed


def _data_start(handle: BinaryIO, info: zipfile.ZipInfo) -> int | None:
    """Where the values of the member ``info`` start (after its local header), or ``None`` when that header is
    damaged: not a local header, or naming another file than the central directory (as :mod:`zipfile` checks)."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        return None
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_SIGNATURE:
        return None
    name_length, extra_length = fields[-2], fields[-1]
    raw = handle.read(name_length)
    name = raw.decode("utf-8" if fields[3] & 0x800 else "cp437", errors="replace")
    if name != info.orig_filename:
        return None
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
