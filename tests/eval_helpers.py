"""Builders of synthetic evaluation records for the results / report / diagnostics tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from attacks.base import format_eps
from kwta_robust.config_digest import config_digest
from kwta_robust.data import TensorData
from kwta_robust.layers import KWTA
from kwta_robust.results import SCHEMA_VERSION, Accuracy, AttackResult, EvalRecord, WorstCase

#: The hash of the builders' config ``{"seed": 0}``: a record that hashes its config as a run writes it.
SEED_ONLY_HASH = config_digest({"seed": 0})


def make_result(label: str, flags: Sequence[int], *, attack: str | None = None, kind: str = "white-box",
                norm: str = "linf", eps: float = 0.3, position: int = 0, cumulative: bool = False,
                single_step: bool = False, params: dict | None = None, violations: int = 0,
                bpda_layers: dict | None = None) -> AttackResult:
    flags = list(flags)
    return AttackResult(
        label=label, attack=attack or label, kind=kind, single_step=single_step, params=dict(params or {}),
        norm=norm, eps=eps, eps_text=format_eps(eps), position=position, seed=0, cumulative=cumulative,
        robust=Accuracy.of(sum(1 for f in flags if f == 1), len(flags)), n_attacked=sum(1 for f in flags if f >= 0),
        n_broken=sum(1 for f in flags if f == 0), flags=flags, wall_time_s=0.5, violations=violations,
        max_violation=0.01 if violations else 0.0, bpda_layers=bpda_layers,
    )


def make_record(results: Sequence[AttackResult] = (), *, n: int | None = None, label: str = "model",
                clean_flags: Sequence[int] | None = None, probes: dict | None = None,
                sanity: Sequence[AttackResult] = (), mode: str = "cascade",
                detection: dict | None = None) -> EvalRecord:
    n = n if n is not None else (len(results[0].flags) if results else 10)
    clean = list(clean_flags) if clean_flags is not None else [1] * n
    rec = EvalRecord(
        schema_version=SCHEMA_VERSION, status="complete",
        model={"label": label, "activation": "kwta", "num_kwta_layers": 2},
        dataset={"name": "toy", "split": "test", "n": n, "indices": list(range(n))},
        clean=Accuracy.of(sum(clean), n), clean_flags=clean, config={"seed": 0}, config_hash=SEED_ONLY_HASH, mode=mode,
        results=list(results), sanity=list(sanity), probes=dict(probes or {}), detection=dict(detection or {}),
    )
    for norm, eps in rec.threat_points():
        at = rec.results_at(norm, eps)
        first = [-2 if c != 1 else next((j for j, r in enumerate(at) if r.flags[i] == 0), -1)
                 for i, c in enumerate(clean)]
        rec.put_worst(WorstCase(norm, eps, format_eps(eps), [r.label for r in at], Accuracy.of(first.count(-1), n),
                                first))
    return rec


def rehash(record: EvalRecord) -> EvalRecord:
    """``record`` with the ``config_hash`` of its ``config`` (after a test gave it another config), as a run writes
    it: the record checks refuse a config that does not hash to its ``config_hash``."""
    record.config_hash = config_digest(record.config)
    return record


def tiny_kwta_data() -> tuple[nn.Module, TensorData]:
    """A seeded kWTA MLP (16 → 32 → kWTA 0.25 → 3, weights N(0, 0.5²)) and 24 random 1×4×4 inputs labelled by its own
    predictions: BPDA beats PGD at 2 steps on it, in a second of CPU."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), KWTA(ratio=0.25), nn.Linear(32, 3)).eval()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.5
    x = torch.rand(24, 1, 4, 4, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, TensorData(x, y, "toy", 3, torch.arange(24))


def unfinish_record(path: Path) -> None:
    """The record at ``path`` as an interrupted run leaves it: no attack results (nor their worst case), status
    ``partial``, so a run that resumes it computes units again (one that resumes a complete record computes none,
    and says nothing of another thread count, determinism setting or commit)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["results"], data["worst_case"], data["status"] = [], [], "partial"
    path.write_text(json.dumps(data), encoding="utf-8")


def evaluate_factories(folder: Path, module: str, names: Sequence[str], steps: int,
                       extra: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Records of the model factories ``module:NAME`` (each of ``names``) written by ``kwta-robust evaluate`` into
    ``folder`` (``NAME.json``), under a tiny digits config (``folder/c.yaml``, returned as ``"config"``): 4 samples,
    one PGD of ``steps`` steps at Linf 0.1, no budget check; ``extra``: per name, more command-line arguments (a
    ``--grid-cell``)."""
    import yaml

    from kwta_robust.cli import main

    config = folder / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 4, "batch_size": 4, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": steps}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    out = {"config": config}
    for name in names:
        out[name] = folder / f"{name}.json"
        status = main(["evaluate", "--model-factory", f"{module}:{name}", "--config", str(config), "--out",
                       str(out[name]), "--no-progress", *(extra or {}).get(name, [])])
        if status != 0:
            raise RuntimeError(f"evaluate {module}:{name} exited with {status}")
    return out
