"""Names that become file names, and output paths checked before any work starts.

* :func:`safe_name` refuses a name taken from a config or an option (a sweep's ``name``, ``compare --labels``) that
  could leave the output folder or break a file name: path separators, ``.``/``..``, an absolute path, control
  characters, an empty or over-long name. :func:`sanitize_name` turns a *derived* name (a checkpoint's file stem)
  into a safe one instead of refusing it.
* :func:`child_path` joins a checked name to the folder the user chose and verifies that the result resolves
  inside it (symbolic links included).
* :func:`check_output_file` / :func:`check_output_dir` make sure an output can be written — it is not a folder
  (or a file), its folder can be created, a file can be created there — so a run fails in its first second with
  one line, not after an hour of training or attacking with a traceback.
* :func:`file_kind` tells what an existing file is from its bytes (nothing is unpickled);
  :func:`check_not_overwriting` (binary outputs) and :func:`check_text_output` (tables, reports) refuse to replace
  a file of another kind; :func:`check_distinct` an input.

Every failure is a one-line :class:`~kwta_robust.errors.ConfigError` naming the option and the fix.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from kwta_robust.errors import ConfigError, short_repr

#: Longest name accepted (file systems allow 255 bytes; suffixes such as ``.json.lock`` are added).
MAX_NAME_LENGTH = 200
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
_ALLOWED_HINT = "use letters, digits, '.', '-' and '_'"


def safe_name(name: object, where: str) -> str:
    """``name`` if it is safe as one file or folder name, else a :class:`ConfigError` naming ``where``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: expected a non-empty name, got {name!r}; {_ALLOWED_HINT}")
    if _UNSAFE_CHARS.search(name):
        raise ConfigError(f"{where}: {name!r} contains a path separator or a control character; a name must stay "
                          f"inside the output folder ({_ALLOWED_HINT})")
    if name in (".", "..") or name != name.strip():
        raise ConfigError(f"{where}: {name!r} is not usable as a file name; {_ALLOWED_HINT}")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{where}: name of {len(name)} characters; use at most {MAX_NAME_LENGTH}")
    return name


def sanitize_name(name: str, fallback: str = "model") -> str:
    """A safe file name made from a derived ``name``: unsafe characters become ``_``, ``.``/``..``/empty become
    ``fallback``, over-long names are cut."""
    text = _UNSAFE_CHARS.sub("_", str(name)).strip()[:MAX_NAME_LENGTH].rstrip()  # no space left at the cut
    return fallback if text in ("", ".", "..") else text


def child_path(root: str | Path, name: str, where: str, suffix: str = "") -> Path:
    """``root / (name + suffix)`` after :func:`safe_name`, verified to resolve inside ``root``."""
    path = Path(root) / f"{safe_name(name, where)}{suffix}"
    if not is_inside(path, root):
        raise ConfigError(f"{where}: {name!r} would write {path.resolve()} outside {Path(root).resolve()}; "
                          "choose another name")
    return path


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) to ``root`` or below it."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved == base or base in resolved.parents


#: Longest name of one folder entry (NAME_MAX of ext4, xfs, btrfs, APFS) and of a whole path (Linux PATH_MAX), in
#: bytes: a longer one was an ``OSError: File name too long`` traceback from the first ``stat``.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4095


def check_path_type(value: object, name: str, what: str = "file") -> Path:
    """``value`` as a :class:`Path` when it is a path (``str`` or a text ``os.PathLike``), else a one-line
    ConfigError naming ``name``, the type and the value given (an API argument of another type: ``5``, ``b"m.pt"``,
    a list): the value shows which of the caller's variables went astray, the type what to convert."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(os.fspath(value), bytes):
        raise ConfigError(f"{name}: expected a {what} path (str or pathlib.Path), got {type(value).__name__} "
                          f"{short_repr(value)}")
    return Path(value)


def shown_path(path: str | Path) -> str:
    """``path`` as text for an error line: one holding a control character (a newline would split the line) is
    shown escaped, as Python writes it."""
    text = str(path)
    return text if text.isprintable() else ascii(text)[1:-1]


def check_path_text(path: str | Path, where: str) -> Path:
    """``path`` as a :class:`Path` if the operating system can take it: no NUL byte (``ValueError: embedded null
    byte``), each name at most :data:`NAME_MAX_BYTES` bytes and the whole at most :data:`PATH_MAX_BYTES`; a one-line
    ConfigError naming ``where`` otherwise (was a traceback, for ``--out`` after every record was read)."""
    text = str(path)
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if "\x00" in text:
        raise ConfigError(f"{where}: {shown} contains a NUL byte, which no file name can hold; give another path")
    try:
        sizes = [len(os.fsencode(part)) for part in Path(text).parts]
        total = len(os.fsencode(text))
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: {shown} is not a file name this system can encode; give another path") from None
    if max(sizes, default=0) > NAME_MAX_BYTES:
        raise ConfigError(f"{where}: {shown} holds a name of {max(sizes)} bytes; file systems allow at most "
                          f"{NAME_MAX_BYTES} bytes per name, give a shorter one")
    if total > PATH_MAX_BYTES:
        raise ConfigError(f"{where}: path of {total} bytes; use at most {PATH_MAX_BYTES}")
    return Path(text)


def resolve_path(path: str | Path, where: str) -> Path:
    """``path`` with its symbolic links followed; one that cannot be followed (a loop of links) is a one-line
    ConfigError naming ``where`` (``Path.resolve`` raised ``RuntimeError: Symlink loop``, a traceback)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:
        reason = "a loop of symbolic links" if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP else \
            (exc.strerror or type(exc).__name__)
        raise ConfigError(f"{where}: cannot follow {str(path)!r} ({reason}); give another path") from None


def _probe_folder(folder: Path, where: str) -> None:
    """A file can be created in ``folder``, or (when it does not exist yet) in its nearest existing parent; the
    check leaves nothing behind. ConfigError naming ``where`` if not."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path.cwd())
    if not existing.is_dir():
        raise ConfigError(f"{where}: {existing} is a file, not a folder; choose a path outside it")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".kwta-robust-write-check."):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write in {folder} ({exc.strerror or type(exc).__name__}); choose a "
                          "writable folder") from None


#: What ends a folder's path (``/``, and ``\\`` on Windows).
_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


def check_output_file(path: str | Path | None, where: str) -> Path | None:
    """Check that the file ``path`` can be written (its folder need not exist: the check creates nothing, the writer
    creates it); ``None`` passes through. A path ending in a separator (``x.md/``) is refused like an existing
    folder: ``Path`` drops the separator, so the file ``x.md`` was written where the user meant a folder."""
    if path is None:
        return None
    if str(path) == "":
        raise ConfigError(f"{where}: empty path; give a file name or leave the option out")
    text = str(path)
    path = check_path_text(path, where)
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a folder; give the path of a file (inside it, for example)")
    if text.endswith(_SEPARATORS) or os.path.basename(text) in (".", ".."):  # Path("x.md/") is the file x.md
        raise ConfigError(f"{where}: {text} is the path of a folder (it ends in '/', '/.' or '/..'); give the path "
                          "of a file (inside that folder, for example)")
    if path.exists() and not path.is_file():  # the output's temp file would be renamed over the device or pipe
        raise ConfigError(f"{where}: {path} is not a regular file (a device, pipe or socket) and would be replaced; "
                          "give the path of a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{where}: {path} is not writable; choose another path")
    _probe_folder(path.parent, where)
    return path


#: The ``format`` string inside every checkpoint :mod:`kwta_robust.checkpoint` writes (its ``FORMAT``; repeated
#: here because the checkpoint module imports torch, which this module must not need).
CHECKPOINT_MARKER = b"kwta-robust-checkpoint"
#: The key every ``--save-adversarial`` file holds (:data:`kwta_robust.adversarial_store.STORE_MARKER`).
STORE_MARKER = b"kwta-robust-adversarial-store"
#: Keys of every ``--save-adversarial`` file, also of those written before it held :data:`STORE_MARKER`.
_STORE_KEYS = (b"pred_clean", b"indices")
#: The ``format`` of a sweep's manifest (:data:`kwta_robust.sweep.manifest.MANIFEST_FORMAT`).
MANIFEST_MARKER = b'"kwta-robust-sweep"'
#: Start of a pre-1.6 (non-zip) ``torch.save`` file: pickle protocol 2 and torch's magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
#: Extensions of the files ``table --out`` (its formats but JSON, which :func:`file_kind` recognises) and ``report
#: --out`` write and overwrite (:func:`check_text_output`).
TABLE_SUFFIXES = (".md", ".markdown", ".csv", ".tex", ".txt")
REPORT_SUFFIXES = (".html", ".htm", ".md", ".markdown")  # the suffixes of kwta_robust.md_report.REPORT_FORMATS


def is_torch_file(source: Path | BinaryIO) -> bool:
    """A ``torch.save`` file: a zip archive (the format since PyTorch 1.6) or the legacy pickle format. ``source``:
    its path, or the file open for reading (binary, seekable; left at its start)."""
    if not isinstance(source, (str, os.PathLike)):
        found = zipfile.is_zipfile(source)
        source.seek(0)
        found = found or source.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC
        source.seek(0)
        return found
    if zipfile.is_zipfile(source):
        return True
    with open(source, "rb") as f:
        return f.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC


def zip_member_failing_crc(path: Path | BinaryIO, names: Sequence[str] | None = None) -> str | None:
    """The first member of the zip archive at ``path`` (or open in it) whose values fail their CRC check, else
    ``None``: torch.load does not check it, so a flipped bit in a stored tensor would be read silently. A member
    zipfile cannot open (a damaged local header, which torch does not read) or an archive it cannot read is left to
    torch.load. ``names``: only these members (all when ``None``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in [i for i in archive.infolist() if names is None or i.filename in names]:
                try:
                    with archive.open(info) as member:
                        while member.read(1 << 20):
                            pass
                except zipfile.BadZipFile as exc:
                    if "CRC" in str(exc):
                        return info.filename
                except (OSError, ValueError, EOFError, NotImplementedError):  # UnicodeDecodeError is a ValueError
                    continue
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return None
    return None


def _zip_kind(path: Path) -> str:
    """What the zip archive at ``path`` is: its pickles (``*/data.pkl``, read as bytes, never unpickled) name a
    checkpoint or an adversarial store; other pickles are a torch file (e.g. the user's weights), ``.npy`` members
    only a NumPy archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [archive.read(name) for name in names if name.endswith("data.pkl")]
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return "zip archive"
    if any(CHECKPOINT_MARKER in pkl for pkl in pickles):
        return "checkpoint"
    if any(STORE_MARKER in pkl or all(key in pkl for key in _STORE_KEYS) for pkl in pickles):
        return "adversarial store"
    if pickles:
        return "torch file"
    return "NumPy .npz archive" if names and all(name.endswith(".npy") for name in names) else "zip archive"


def file_kind(path: Path) -> str | None:
    """What is at ``path``, as far as its bytes tell: ``"checkpoint"`` (a torch file this package wrote),
    ``"adversarial store"`` (an ``evaluate --save-adversarial`` file), ``"torch file"`` (any other ``torch.save``
    file, e.g. the user's own weights), ``"NumPy .npz archive"``, ``"zip archive"`` (any other), ``"record"`` (a JSON
    evaluation record), ``"sweep manifest"``, ``"table"`` (a table's JSON, ``table --format json``); ``None`` for
    anything else or no file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "torch file"
    if not head.lstrip().startswith(b"{"):
        return None
    if b'"schema_version"' in head:
        return "record"
    if MANIFEST_MARKER in head:
        return "sweep manifest"
    return "table" if head.lstrip()[1:].lstrip().startswith(b'"title"') and b'"columns"' in head else None


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def check_not_overwriting(path: Path | None, kind: str, where: str, *, only_own: bool = False) -> None:
    """Refuse to write a ``kind`` file over a file of another kind (:func:`file_kind`): ``train --out run.json``
    would turn an evaluation record into a checkpoint, ``evaluate --save-adversarial`` the user's weights into an
    adversarial store. With ``only_own`` an existing file is overwritten only if it is this package's ``kind``
    (``train --out`` never overwrites the user's own weights or any other file). A one-line error naming ``where``."""
    if path is None or not path.is_file():
        return
    found = file_kind(path)
    if found == kind or (found is None and not only_own):
        return
    what = _a(found) if found is not None else f"a file that is not a kwta-robust {kind}"
    raise ConfigError(f"{where}: {path} holds {what}; writing the {kind} there would destroy it, choose another path"
                      + (" (or delete the file first)" if found is None else ""))


def check_text_output(path: Path | None, kind: str, suffixes: tuple[str, ...], where: str) -> None:
    """Refuse to write the text output ``kind`` (``"table"``, ``"report"``) over an existing file unless it looks
    like an earlier output of the same command: ``kind`` by its content (:func:`file_kind`: a table's JSON), or a
    file ending in one of ``suffixes`` (the extensions of the formats whose content tells nothing: Markdown, CSV,
    LaTeX, text, HTML) that holds no kind :func:`file_kind` recognises. Never a record, a manifest, a checkpoint,
    a torch or zip file, a YAML config, Python source or another tool's JSON. A one-line error naming ``where``."""
    if path is None or not path.is_file():
        return
    found = file_kind(path)
    if found == kind or (found is None and path.suffix.lower() in suffixes):
        return
    if found is not None:
        raise ConfigError(f"{where}: {path} holds {_a(found)}; writing the {kind} there would destroy it, choose "
                          "another path")
    own = "/".join(suffixes) + (f", or {_a(kind)} in JSON" if kind == "table" else "")
    raise ConfigError(f"{where}: {path} is not {_a(kind)} this command wrote (it overwrites only a file ending in "
                      f"{own}); choose another path (or delete the file first)")


def check_inputs_once(inputs: Sequence[tuple[str, str | Path]]) -> None:
    """No input file is read twice (``[(what, path), ...]``, e.g. a record listed twice, or listed next to
    ``--sweep`` that holds it): it was a row twice in the tables, paired with itself, and counted twice in a
    report's "N records". A one-line error naming both."""
    seen: dict[Path, str] = {}
    for what, path in inputs:
        resolved = resolve_path(check_path_text(path, what), what)
        if resolved in seen:
            raise ConfigError(f"{what}: the same file as {seen[resolved]}; give each record once")
        seen[resolved] = what


def check_written_files(files: Iterable[tuple[Path, str]], writer: str, where: str) -> None:
    """Before any work: none of the files ``writer`` (``"compare"``, ``"the sweep"``) writes at the end,
    ``(path, what it holds)``, is a folder, which stopped the run after every model or cell was evaluated. A
    one-line error naming ``where`` (the option that chose the folder)."""
    for path, what in files:
        if path.is_dir():
            raise ConfigError(f"{where}: {path} is a folder, where {writer} writes its {what}; move it away or use "
                              f"another {where}")


def check_output_dir(path: str | Path, where: str) -> Path:
    """Check that files can be written in the folder ``path`` (if missing, in its nearest existing parent: the check
    creates nothing, the writer creates it)."""
    if str(path) == "":
        raise ConfigError(f"{where}: empty path; give a folder")
    path = check_path_text(path, where)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: {path} is a file, not a folder; give a folder path")
    _probe_folder(path, where)
    return path


def check_distinct(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None] | None = None) -> None:
    """No output file is also an input or another output (one would overwrite the other): ``{option: path}``."""
    seen: dict[Path, str] = {resolve_path(p, option): option
                             for option, p in (inputs or {}).items() if p is not None}
    for option, path in outputs.items():
        if path is None:
            continue
        resolved = resolve_path(path, option)
        if resolved in seen:
            raise ConfigError(f"{option}: {path} is also given as {seen[resolved]}; the output would overwrite it, "
                              "use another path")
        seen[resolved] = option
