"""What a sweep writes from its records: the robustness matrices in every format that has a matrices file
(``matrices.md``, ``matrices.csv``, ``matrices.tex``; :mod:`kwta_robust.formats`) and the heatmaps and
robust-accuracy-vs-eps plots under ``plots/`` (:mod:`kwta_robust.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS
from kwta_robust.matrix import RobustnessMatrix, build_matrices
from kwta_robust.results import EvalRecord, atomic_write_text
from kwta_robust.safe_paths import check_written_files, is_inside


#: What a sweep writes in its folder besides the matrices files: the manifest, the report, cells and plots.
OWN_FILES: tuple[str, ...] = ("sweep.json", "report.html")
OWN_FOLDERS: tuple[str, ...] = ("cells", "plots")


def written_paths(out_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """The files and folders a sweep in ``out_dir`` writes (to keep its inputs out of them)."""
    out_dir = Path(out_dir)
    tables = [out_dir / e.obj.matrices_file for e in FORMATS.entries() if e.obj.matrices_file]
    return tables + [out_dir / name for name in OWN_FILES], [out_dir / name for name in OWN_FOLDERS]


def check_inputs_outside(inputs: Sequence[str | Path], out_dir: str | Path) -> None:
    """A one-line error if a sweep input (its config, the train/eval files it names) is a file the sweep in
    ``out_dir`` would overwrite."""
    files, folders = written_paths(out_dir)
    targets = {f.resolve() for f in files}
    for given in inputs:
        path = Path(given).resolve()
        if path in targets or any(is_inside(path, folder) for folder in folders):
            raise ConfigError(f"--out-dir: the sweep writes {path} (one of its outputs), which is its input {given}; "
                              "choose another --out-dir or move the config")


def check_sweep_outputs(out_dir: str | Path, *, tables: bool = True, plots: bool = True) -> None:
    """Before any cell runs: no file the sweep in ``out_dir`` writes is a folder (the manifest; with ``tables`` the
    matrices and the report) and no folder it keeps is a file (``cells/``; with ``plots`` ``plots/``), which stopped
    the run with a traceback (after every cell was computed, for the matrices). A one-line error naming the path."""
    out_dir = Path(out_dir)
    files, folders = written_paths(out_dir)
    check_written_files([(path, path.name) for path in (files if tables else [out_dir / "sweep.json"])], "the sweep",
                        "--out-dir")
    for path in folders if plots else [out_dir / "cells"]:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out-dir: {path} is a file, where the sweep keeps its {path.name}/ folder; move it "
                              "away or use another --out-dir")


def write_outputs(records: Sequence[EvalRecord], out_dir: str | Path, *, title: str = "", plots: bool = True,
                  notes: Sequence[str] = (), command: str = "sweep",
                  matrices: Sequence[RobustnessMatrix] | None = None) -> dict[str, list[Path]]:
    """The matrices (one file per format with a ``matrices_file``) and, with ``plots``, the heatmaps and
    robust-accuracy-vs-eps plots under ``plots/``. Returns the written paths by kind (``tables``, ``plots``).
    ``command`` (the one the user ran) starts every error placing the records (it had said ``table --matrix``).
    ``matrices``: those :func:`~kwta_robust.matrix.build_matrices` built from ``records`` with this ``title``,
    ``notes`` and ``command`` where the caller has them (``sweep`` prints them too: built once); default built here."""
    out_dir = Path(out_dir)
    if matrices is None:
        matrices = build_matrices(records, title=title, notes=notes, command=command)
    written: dict[str, list[Path]] = {"tables": [], "plots": []}
    for entry in FORMATS.entries():
        if entry.obj.matrices_file:
            path = out_dir / entry.obj.matrices_file
            atomic_write_text(path, entry.obj().matrices(matrices))
            written["tables"].append(path)
    if plots:
        from kwta_robust.plots import write_plots  # matplotlib: loaded only when plots are drawn

        written["plots"] = write_plots(matrices, out_dir / "plots")
    return written
