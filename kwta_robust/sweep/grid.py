"""The sweep's grid: activation sparsity (kWTA ``k/N``; 1.0 = the ReLU twin) × weight sparsity × pruning method.

Cells: every ratio × sparsity × method, except that sparsity 0 is the one dense cell of its row, shared by all
methods (:data:`~kwta_robust.matrix.DENSE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE, RELU_RATIO
from kwta_robust.sparsity.registry import METHODS as PRUNING_METHODS

GRID_KEYS: tuple[str, ...] = ("kwta_ratios", "weight_sparsities", "pruning_methods")


@dataclass(frozen=True)
class GridCell:
    """One point of the grid: kWTA ratio ``k/N`` (:data:`RELU_RATIO` = the ReLU twin), target weight sparsity and
    pruning method (:data:`DENSE` at sparsity 0)."""

    kwta_ratio: float
    weight_sparsity: float
    pruning_method: str

    @property
    def activation(self) -> str:
        return "relu" if self.kwta_ratio == RELU_RATIO else "kwta"

    @property
    def label(self) -> str:
        """Readable name, e.g. ``relu-dense``, ``kwta0.2-magnitude0.8``."""
        act = "relu" if self.activation == "relu" else f"kwta{self.kwta_ratio:g}"
        prune = "dense" if self.pruning_method == DENSE else f"{self.pruning_method}{self.weight_sparsity:g}"
        return f"{act}-{prune}"

    def to_dict(self) -> dict:
        return {"kwta_ratio": self.kwta_ratio, "activation": self.activation,
                "weight_sparsity": self.weight_sparsity, "pruning_method": self.pruning_method}


@dataclass(frozen=True)
class Grid:
    """The three axes (validated: non-empty, no duplicates, ratios in (0, 1], sparsities in [0, 1), known methods)."""

    kwta_ratios: tuple[float, ...]
    weight_sparsities: tuple[float, ...]
    pruning_methods: tuple[str, ...] = ("magnitude",)

    @classmethod
    def from_dict(cls, data: Any, where: str = "grid") -> "Grid":
        check_keys(data, GRID_KEYS, where)
        for key in ("kwta_ratios", "weight_sparsities"):
            if key not in data:
                raise ConfigError(f"{where}.{key}: missing; " + _GRID_HINTS[key])
        ratios = _numbers(data["kwta_ratios"], f"{where}.kwta_ratios")
        sparsities = _numbers(data["weight_sparsities"], f"{where}.weight_sparsities")
        for i, r in enumerate(ratios):
            if not 0.0 < r <= 1.0:
                raise ConfigError(f"{where}.kwta_ratios[{i}]: {r:g} is outside (0, 1]; a ratio k/N keeps that fraction "
                                  "of units (1.0 = the ReLU twin)")
        for i, s in enumerate(sparsities):
            if not 0.0 <= s < 1.0:
                raise ConfigError(f"{where}.weight_sparsities[{i}]: {s:g} is outside [0, 1); it is the fraction of "
                                  "weights set to zero (0 = dense)")
        methods_raw = data.get("pruning_methods", ["magnitude"])
        if isinstance(methods_raw, str):
            methods_raw = [methods_raw]
        if not isinstance(methods_raw, (list, tuple)):
            raise ConfigError(f"{where}.pruning_methods: expected a list of method names, got {methods_raw!r}")
        if not methods_raw:
            raise ConfigError(f"{where}.pruning_methods: empty; " + _GRID_HINTS["pruning_methods"])
        for i, m in enumerate(methods_raw):
            PRUNING_METHODS.info(m, field=f"{where}.pruning_methods[{i}]")
        methods = tuple(str(m) for m in methods_raw)
        for key, values in (("kwta_ratios", ratios), ("weight_sparsities", sparsities), ("pruning_methods", methods)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}.{key}: duplicate values in {list(values)}")
        return cls(ratios, sparsities, methods)

    def cells(self) -> list[GridCell]:
        """Rows in the given ratio order; per row the dense cell once, then every method at every sparsity > 0."""
        out: list[GridCell] = []
        for r in self.kwta_ratios:
            for s in self.weight_sparsities:
                if s == 0.0:
                    out.append(GridCell(r, 0.0, DENSE))
                else:
                    out += [GridCell(r, s, m) for m in self.pruning_methods]
        return out

    def to_dict(self) -> dict:
        return {"kwta_ratios": list(self.kwta_ratios), "weight_sparsities": list(self.weight_sparsities),
                "pruning_methods": list(self.pruning_methods)}


_GRID_HINTS = {
    "kwta_ratios": "give at least one kWTA ratio k/N in (0, 1], e.g. [1.0, 0.2, 0.05] (1.0 = the ReLU twin)",
    "weight_sparsities": "give at least one weight sparsity in [0, 1), e.g. [0.0, 0.5, 0.8] (0 = dense)",
    "pruning_methods": "give at least one pruning method, e.g. [magnitude] (or leave the key out)",
}


def check_keys(data: Any, valid: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of numbers, got {value!r}")
    if not value:
        raise ConfigError(f"{where}: empty grid axis; " + _GRID_HINTS[where.rsplit(".", 1)[-1]])
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}[{i}]: expected a number, got {v!r}")
        out.append(float(v))
    return tuple(out)
