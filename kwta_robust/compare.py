"""Compare several models on the same samples (the library behind ``kwta-robust compare`` and ``quickstart``).

Every model is evaluated with the same config (so the same seeded sample selection); with ``transfer`` each other
model is a transfer source for it (e.g. adversarial inputs crafted on the ReLU twin, evaluated on the kWTA model:
Athalye et al. 2018 and Tramèr et al. 2020 use this to expose gradient masking). One record per model goes to
``out_dir/<label>.json`` (resumable like ``evaluate``); :func:`write_comparison` adds the wide Markdown table
(``compare.md``) and the HTML report (``compare.html``, :mod:`kwta_robust.html_report`).
"""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from kwta_robust.bpda_layers import check_bpda_specs
from kwta_robust.bpda_preflight import LayerProbe, check_bpda_applicable
from kwta_robust.comparability import data_split_seed
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError, eval_out_of_memory
from kwta_robust.evaluate import evaluate
from kwta_robust.formats import render_table
from kwta_robust.html_report import write_report
from kwta_robust.loading import ModelForEval, load_pinned_eval_data
from kwta_robust.model_checks import probe_for_data
from kwta_robust.samples import select_samples
from kwta_robust.snapshot import model_device
from kwta_robust.paired import paired_table
from kwta_robust.report import compare_table
from kwta_robust.resume import StalePolicy
from kwta_robust.runtime import converts
from kwta_robust.results import EvalRecord, atomic_write_text
from kwta_robust.runs import declare_grid_cell, warn_grid_cell
from kwta_robust.safe_paths import check_written_files, child_path, safe_name, sanitize_name
from kwta_robust.shards import Sharding, evaluate_sharded, refuse_unmerged_parts

logger = logging.getLogger(__name__)


def file_key(label: str) -> str:
    """The record file ``label`` names on every file system: case-insensitive ones (macOS, Windows) fold case, and
    macOS the Unicode normalization form, so ``A`` and ``a`` (or ``é`` composed and decomposed) are one file there."""
    return unicodedata.normalize("NFC", label).casefold()


def warn_repeated_models(models: Sequence[tuple[str, str, Hashable | None]]) -> None:
    """Warn of one model given twice: it runs as two models with the same numbers, and the "transfer" attack between
    them is crafted on the model itself. Not refused: comparing a model with itself is a determinism check. Each
    entry is ``(field, given, key)``: the field naming the model's place (``MODEL 2``, ``models['b']``), how it was
    given, and what makes two entries the same model (``None``: nothing tells; never a repeat)."""
    seen: dict[Hashable, str] = {}
    for field, given, key in models:
        if key is None:
            continue
        if key in seen:
            logger.warning("%s: %s is %s again: one model compared with itself (the same numbers, and its transfer "
                           "attack crafted on the model itself); give another model to compare two",
                           field, given, seen[key])
        seen.setdefault(key, field)


def unique_labels(names: Sequence[str]) -> list[str]:
    """Make labels unique by appending ``-2``, ``-3`` … to repeats (also of a name that differs only in case or
    Unicode form: :func:`file_key`)."""
    out: list[str] = []
    for name in names:
        label, i = name, 2
        while file_key(label) in map(file_key, out):
            label, i = f"{name}-{i}", i + 1
        out.append(label)
    return out


def same_file_labels(labels: Sequence[str]) -> tuple[str, str] | None:
    """The first two of ``labels`` that name one record file (:func:`file_key`), or ``None``."""
    seen: dict[str, str] = {}
    for label in labels:
        if file_key(label) in seen:
            return seen[file_key(label)], label
        seen[file_key(label)] = label
    return None


def model_labels(checkpoints: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """One unique label per checkpoint: ``labels`` (each a plain name, as it names a record file, and no two alike:
    they are the names the tables and paired differences show) or the checkpoints' sanitized file stems (repeats
    numbered ``-2``, ``-3``, ...)."""
    if labels is not None:
        if len(labels) != len(checkpoints) or not all(labels):
            raise ConfigError(f"--labels: give one non-empty name per checkpoint ({len(checkpoints)})")
        names = [safe_name(label, "--labels") for label in labels]
        repeated = same_file_labels(names)
        if repeated is not None:
            raise ConfigError(f"--labels: {repeated_text(*repeated)}; give each model its own name")
        return names
    return unique_labels([sanitize_name(Path(c).stem) for c in checkpoints])


def repeated_text(first: str, second: str) -> str:
    """How a message names two labels of one record file (:func:`same_file_labels`)."""
    if first == second:
        return f"{first!r} is given twice"
    return f"{first!r} and {second!r} name one record file on a case-insensitive file system (macOS, Windows)"


def declare_cells(models: Sequence[ModelForEval], cells: Mapping[str, Mapping[str, Any]]) -> None:
    """The robustness-matrix cell ``cells`` declares for a model (label → ``model.grid_cell``, ``compare --grid-cell
    LABEL=...``: :func:`kwta_robust.grid_cell.parse_grid_cell`'s) into its ``info``, as evaluate's ``--grid-cell``
    puts it, with the warning, before any work, where its weights contradict the declared sparsity
    (:func:`kwta_robust.runs.warn_grid_cell`); :func:`compare_models` then puts it on the model's record."""
    for m in models:
        if m.label in cells:
            m.info["grid_cell"] = dict(cells[m.label])
            warn_grid_cell(m.info)


def compare_models(models: Sequence[ModelForEval], cfg: EvalConfig, out_dir: Path | None, *, transfer: bool = True,
                   resume: bool = True, command: list[str] | None = None, progress: bool = True,
                   sharding: Sharding | None = None, stale: StalePolicy = StalePolicy("--out-dir"),
                   data: TensorData | None = None) -> list[EvalRecord]:
    """Evaluate each model on the same samples (with the others as transfer sources); one record each, each
    evaluation split into shards with ``sharding`` (:mod:`kwta_robust.shards`). ``stale``: what to do with a record
    in ``out_dir`` that cannot be resumed (:mod:`kwta_robust.resume`; default: refuse, naming ``--out-dir``).
    ``out_dir=None``: no file is written (the records are only returned; not with ``sharding``). ``data``: the split
    to evaluate on (default: the config's, :func:`~kwta_robust.loading.load_eval_data`, read once: a data file's
    SHA-256 is pinned in ``cfg`` from that read). Running out of memory is one
    :class:`~kwta_robust.errors.EvalOutOfMemory` line naming the batch settings and ``stale``'s options. A model
    whose ``info`` declares a ``grid_cell`` (:func:`declare_cells`) gets it on its record as ``evaluate --grid-cell``
    gives it (:func:`kwta_robust.runs.declare_grid_cell`: with its flags; a resumed or finished record too)."""
    check_comparable(models, cfg, out_dir, sharding)
    with contextlib.ExitStack() as held:
        held.enter_context(eval_out_of_memory(stale.option, stale.restart, stale.set_aside))  # the pre-checks too
        # shards: one session for every model; its workers start while the data loads
        executor = None if sharding is None else held.enter_context(sharding.session())
        data, cfg, probes = comparison_data(models, cfg, data)
        records = []
        for m, probe in zip(models, probes):
            others = transfer_sources(models, m, transfer)
            logger.info("evaluating %s%s", m.label, f" (transfer sources: {', '.join(others)})" if others else "")
            out = None if out_dir is None else comparison_record_path(out_dir, m.label)
            if sharding is not None:
                records.append(evaluate_sharded(m, data, cfg, sharding, out_path=out, resume=resume, sources=others,
                                                command=command, progress=progress, strict_bpda_layers=False,
                                                executor=executor, stale=stale))
                continue
            if out is not None:
                refuse_unmerged_parts(out, resume)
            records.append(evaluate(m.model, data, cfg, m.info, out_path=out, resume=resume,
                                    transfer_sources={k: o.model for k, o in others.items()}, command=command,
                                    progress=progress, strict_bpda_layers=False, stale=stale,
                                    layer_probe=probe))
    for record, m in zip(records, models):
        if "grid_cell" in m.info:  # a declaration, not a measurement: set on a resumed or finished record too
            declare_grid_cell(record, m.info["grid_cell"], None if out_dir is None else
                              comparison_record_path(out_dir, m.label))
    return records


def check_comparable(models: Sequence[ModelForEval], cfg: EvalConfig, out_dir: Path | None,
                     sharding: Sharding | None) -> None:
    """What :func:`compare_models` refuses before it loads the data: fewer than two models, shards without an output
    folder, models trained on different splits, a BPDA layer spec matching no module of any model."""
    if len(models) < 2:
        raise ConfigError("compare: give at least two models")
    if out_dir is None and sharding is not None:
        raise ConfigError("compare: shards write their parts next to the records; give an output folder")
    repeated = None if out_dir is None else same_file_labels([m.label for m in models])
    if repeated is not None:  # the second record would replace the first
        raise ConfigError(f"compare: labels {repeated_text(*repeated)}; give each model its own label")
    seeds = {data_split_seed(m.metadata.get("data_split_seed")) for m in models}  # as the data loading reads them
    if len(seeds) > 1 and cfg.data_file is None:  # a data file's samples are the same whatever split trained them
        raise ConfigError("compare: the models were trained on different data splits (data_split_seed "
                          f"{sorted(seeds)}); they cannot be evaluated on the same held-out samples")
    check_bpda_specs({m.label: m.model for m in models}, cfg)


def comparison_data(models: Sequence[ModelForEval], cfg: EvalConfig, data: TensorData | None = None,
                    ) -> tuple[TensorData, EvalConfig, list[LayerProbe | None]]:
    """The split every model is evaluated on (``data``, else the config's, read once: ``cfg`` is returned with a data
    file's SHA-256 pinned from that read), each model's output checked on it before the first evaluation starts
    (:func:`~kwta_robust.model_checks.probe_for_data`), and so is every BPDA attack's applicability to each model
    (:mod:`kwta_robust.bpda_preflight`): the last model's refusal would otherwise come after the others' records
    were written. The third item: per model, in order, the layer probe that check made (``None``: none), in the
    memory layout the model's evaluation will try (channels-last on the CPU), which the evaluation keeps where it
    runs in that layout instead of probing the same samples again (``evaluate(layer_probe=...)``)."""
    if data is None:
        data, cfg = load_pinned_eval_data(cfg, models[0].metadata, [m.model for m in models])
    selected = select_samples(data, cfg).x
    specs = cfg.labelled_attacks(int(data.num_classes))
    probes = []
    for m in models:
        x = selected.to(model_device(m.model))
        probe_for_data(m.model, m.info, x[:2], int(data.num_classes), data.name)
        channels_last = converts("auto", model_device(m.model))  # the layout evaluate() will try: its default
        probes.append(check_bpda_applicable(m.model, x, cfg, specs, strict=False, channels_last=channels_last))
    return data, cfg, probes


def transfer_sources(models: Sequence[ModelForEval], model: ModelForEval, transfer: bool) -> dict[str, ModelForEval]:
    """The transfer sources of ``model`` in a comparison of ``models``: every other model (none without
    ``transfer``), by label."""
    return {o.label: o for o in models if o is not model} if transfer else {}


def comparison_record_path(out_dir: Path, label: str) -> Path:
    """Where a comparison writes the record of the model ``label``: ``out_dir/<label>.json``."""
    return child_path(out_dir, label, "label", ".json")


def check_comparison_outputs(out_dir: Path, stem: str = "compare", where: str = "--out-dir") -> None:
    """Before any work: :func:`write_comparison` can write ``<stem>.md`` and ``<stem>.html`` in ``out_dir`` (neither
    is a folder, which stopped the run after every model was evaluated). A one-line error naming ``where``."""
    check_written_files([(out_dir / f"{stem}.md", "table"), (out_dir / f"{stem}.html", "report")], stem, where)


def write_comparison(records: Sequence[EvalRecord], out_dir: Path, stem: str = "compare", *, title: str | None = None,
                     notes: Sequence[str] = ()) -> list[Path]:
    """``<stem>.md`` (the wide table, ``notes`` first) and ``<stem>.html`` (the report, ``notes`` heading its
    overview) in ``out_dir``."""
    table = compare_table(records) if title is None else compare_table(records, title=title)
    table.notes[:0] = list(notes)
    paired = paired_table(records)
    markdown = out_dir / f"{stem}.md"
    atomic_write_text(markdown, render_table(table, "wide") + ("\n" + render_table(paired, "wide") if paired else ""))
    return [markdown, write_report(out_dir / f"{stem}.html", records, title=title, notes=notes)]
