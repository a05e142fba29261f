"""Persona walk 51c: a matrix cell trained with another recipe (here another training seed) than the other cells
is named in the legend, while the per-cell settings (activation, k/N, pruning, output path) differ silently."""
from eval_helpers import make_record, make_result
from kwta_robust.matrix import DENSE, build_matrices, legend


def trained_record(ratio: float, sparsity: float, seed: int = 0):
    """A sweep cell's record whose checkpoint recorded our trainer's config (model.training.training)."""
    method = DENSE if sparsity == 0.0 else "magnitude"
    rec = make_record([make_result("pgd", [1] * 4 + [0] * 6, eps=0.1)], label=f"r{ratio:g}-{method}{sparsity:g}")
    relu = ratio == 1.0
    rec.model["activation"] = "relu" if relu else "kwta"
    rec.model["kwta_ratio"] = None if relu else ratio
    rec.model["weight_sparsity"] = {"overall": sparsity}
    rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": method,
                               "cell_id": rec.label, "activation": rec.model["activation"]}
    pruned = None if sparsity == 0.0 else {"method": method, "target_sparsity": sparsity}
    rec.model["training"] = {"seed": seed, "pruning": pruned, "training": {
        "arch": "cnn", "epochs": 1, "seed": seed, "out": f"/runs/{rec.label}/model.pt",
        "activation": {"name": rec.model["activation"], "k_ratio": None if relu else ratio, "mode": "volume"},
        "pruning": None if sparsity == 0.0 else {"method": method, "sparsity": sparsity, "retrain_epochs": 1}}}
    return rec


def notes(records) -> list[str]:
    return [n for n in legend(build_matrices(records)) if n.startswith("trained with another recipe")]


def test_cell_with_another_training_seed_is_named() -> None:
    records = [trained_record(r, s) for r in (1.0, 0.2) for s in (0.0, 0.5)]
    assert notes(records) == []  # one recipe: per-cell settings differ, no note
    records[2] = trained_record(0.2, 0.0, seed=1)
    (note,) = notes(records)
    assert note.endswith("seed 1 in k/N 0.2 × 0 (dense) r0.2-none0 (0 in the others)")
    assert "retrain them with the others' settings" in note
