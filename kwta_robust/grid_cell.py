"""A grid cell declared by the user (``evaluate --grid-cell``, ``model.grid_cell`` of a record): its text parsed and
checked, for a model that is not ours, whose kWTA ratio and pruning the harness cannot read from a checkpoint's
metadata (:mod:`kwta_robust.matrix` places the record by it). Kept apart from the matrices so the parsing has one
home, small and free of the matrices' imports.
"""

from __future__ import annotations

from typing import Any

from kwta_robust.errors import ConfigError
from kwta_robust.sparsity.config import METHODS as PRUNING_METHODS

#: Pruning method of dense (weight sparsity 0) cells.
DENSE = "none"
#: Keys of a declared grid cell (``evaluate --grid-cell``); ``pruning_method`` is optional.
GRID_CELL_KEYS: tuple[str, ...] = ("kwta_ratio", "weight_sparsity", "pruning_method")
#: Pruning method of a declared sparse cell that names none.
DECLARED_METHOD = "declared"


def parse_grid_cell(text: str, where: str = "--grid-cell") -> dict[str, Any]:
    """``"kwta_ratio=R,weight_sparsity=S[,pruning_method=NAME]"`` as the ``model.grid_cell`` of a record: ``R`` in
    (0, 1] (1.0: the ReLU twin), ``S`` in [0, 1) (0: dense; the method is then :data:`DENSE`, else ``NAME``, a
    registered pruning method, or :data:`DECLARED_METHOD`). One-line :class:`ConfigError` naming ``where`` and the fix
    otherwise."""
    example = f"{where}: write e.g. kwta_ratio=0.1,weight_sparsity=0.5 (optionally ,pruning_method=magnitude)"
    pairs = [part.partition("=") for part in str(text).split(",") if part.strip()]
    if not pairs or any(not sep for _, sep, _ in pairs):
        raise ConfigError(f"{example}; got {text!r}")
    given = {key.strip(): value.strip() for key, _, value in pairs}
    unknown = sorted(set(given) - set(GRID_CELL_KEYS))
    missing = [key for key in GRID_CELL_KEYS[:2] if key not in given]
    if unknown or missing or len(given) != len(pairs):
        problem = (f"unknown key {unknown[0]!r}" if unknown else f"missing {missing[0]}" if missing
                   else "a key given twice")
        raise ConfigError(f"{example}; {problem} in {text!r}")
    try:
        ratio, sparsity = float(given["kwta_ratio"]), float(given["weight_sparsity"])
    except ValueError:
        raise ConfigError(f"{example}; kwta_ratio and weight_sparsity must be numbers, got {text!r}") from None
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"{where}: kwta_ratio {given['kwta_ratio']} is outside (0, 1]; give the fraction of units "
                          "each kWTA layer keeps (1.0 for the ReLU twin)")
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"{where}: weight_sparsity {given['weight_sparsity']} is outside [0, 1); give the fraction "
                          "of the pruned layers' weights set to zero (0 for dense)")
    method = given.get("pruning_method") or DECLARED_METHOD
    if given.get("pruning_method") and method not in PRUNING_METHODS.names():
        raise PRUNING_METHODS.unknown(method, field=where)
    return {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": DENSE if sparsity == 0.0 else method}

