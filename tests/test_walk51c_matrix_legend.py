"""Persona walk 51c: the matrices' legend names the flagged cells in the rows' order (the ReLU twin, then k/N
falling; per row, weight sparsity rising), whatever order `table --matrix` got the record files in (a shell glob
sorts kwta0.05-... before kwta0.2-...), as a sweep's legend does."""
from eval_helpers import make_record, make_result
from kwta_robust.matrix import DENSE, build_matrices, legend
from kwta_robust.results import Flag

N = 10


def flagged_record(ratio: float, sparsity: float):
    """A record at one sweep cell with a critical flag; PGD keeps 4 of N at Linf 0.1."""
    method = DENSE if sparsity == 0.0 else "magnitude"
    rec = make_record([make_result("pgd", [1] * 4 + [0] * 6, eps=0.1)], label=f"r{ratio:g}-{method}{sparsity:g}")
    rec.model["activation"] = "relu" if ratio == 1.0 else "kwta"
    rec.model["kwta_ratio"] = None if ratio == 1.0 else ratio
    rec.model["weight_sparsity"] = {"overall": sparsity}
    rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": method,
                               "cell_id": rec.label, "activation": rec.model["activation"]}
    rec.diagnostics = [Flag("adaptive-beats-pgd", "critical", "-")]
    return rec


def test_flagged_cells_are_named_in_the_rows_order() -> None:
    records = [flagged_record(r, s) for r, s in [(0.05, 0.5), (0.05, 0.0), (0.2, 0.5), (1.0, 0.0), (0.2, 0.0)]]
    matrices = build_matrices(records)
    assert matrices[0].ratios == [1.0, 0.2, 0.05] and matrices[0].sparsities == [0.0, 0.5]
    line = next(n for n in legend(matrices) if n.startswith("critical diagnostics flags"))
    named = [line.index(f"{label} (adaptive-beats-pgd)") for label in
             ["r1-none0", "r0.2-none0", "r0.2-magnitude0.5", "r0.05-none0", "r0.05-magnitude0.5"]]
    assert named == sorted(named)
