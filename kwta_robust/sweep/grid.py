"""The sweep's grid: activation sparsity (kWTA ``k/N``; 1.0 = the ReLU twin) × weight sparsity × pruning method.

Cells: every ratio × sparsity × method, except that sparsity 0 is the one dense cell of its row, shared by all
methods (:data:`~kwta_robust.matrix.DENSE`). On every axis one value stands for a list of one (``kwta_ratios: 0.2``
is ``[0.2]``), as ``epsilons: 0.3`` does in an eval config; a text that holds several values (``0.2, 0.05``: YAML
reads a list without brackets as one text) is refused naming the axis and the list to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Mapping

from pydantic import BeforeValidator

from kwta_robust.configio import AS_LIST, Invalid, Number, config_class, config_field, parse
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE, RELU_RATIO
from kwta_robust.sparsity.config import METHODS as PRUNING_METHODS
from kwta_robust.visible_text import visible


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

def _one_value(value: Any) -> Any:
    """An axis given as text of several values (``0.2, 0.05`` or ``[0.2, 0.05]`` quoted) is refused as a whole: its
    ``[0]`` error (``expected a number``, ``unknown pruning method``) named no list the file holds."""
    if isinstance(value, str) and any(c in value for c in ",[] "):
        values = ", ".join(visible(v) for v in value.strip("[] ").replace(",", " ").split())
        raise Invalid(f"{value!r} is one text, not a list; write the values as a YAML list, e.g. [{values}]")
    return value


def as_written(exc: ConfigError, grid: Any, where: str = "grid") -> ConfigError:
    """``exc`` (a grid's error, ``grid`` the mapping the config gave) naming the axis ``grid.kwta_ratios`` instead of
    ``grid.kwta_ratios[0]`` where the config gave the axis one value, not a list (``kwta_ratios: 2``: it wrote no
    list, so no ``[0]``); ``exc`` itself otherwise."""
    for axis in Grid.KEYS if isinstance(grid, Mapping) and exc.detail is not None else ():
        if exc.field == f"{where}.{axis}[0]" and axis in grid and not isinstance(grid[axis], (list, tuple)):
            return ConfigError(field=f"{where}.{axis}", detail=exc.detail)
    return exc


#: One value stands for a list of one (``0.2`` is ``[0.2]``); text of several values is refused (:func:`_one_value`).
AXIS_VALUES = BeforeValidator(_one_value)
Axis = Annotated[tuple[Number, ...], AS_LIST, AXIS_VALUES]

_GRID_HINTS = {
    "kwta_ratios": "give at least one kWTA ratio k/N in (0, 1], e.g. [1.0, 0.2, 0.05] (1.0 = the ReLU twin)",
    "weight_sparsities": "give at least one weight sparsity in [0, 1), e.g. [0.0, 0.5, 0.8] (0 = dense)",
    "pruning_methods": "give at least one pruning method, e.g. [magnitude] (or leave the key out)",
}


@config_class(frozen=True, prefix="grid")
class Grid:
    """The three axes (validated: non-empty, no duplicates, ratios in (0, 1], sparsities in [0, 1), known methods)."""

    kwta_ratios: Axis = config_field(hint=_GRID_HINTS["kwta_ratios"])
    weight_sparsities: Axis = config_field(hint=_GRID_HINTS["weight_sparsities"])
    pruning_methods: Annotated[tuple[str, ...], AS_LIST, AXIS_VALUES] = ("magnitude",)

    def __post_init__(self) -> None:
        for key in self.KEYS:
            if not getattr(self, key):
                raise Invalid(f"empty; {_GRID_HINTS[key]}", at=(key,))
        for i, r in enumerate(self.kwta_ratios):
            if not 0.0 < r <= 1.0:
                raise Invalid(f"{r:g} is outside (0, 1]; a ratio k/N keeps that fraction of units (1.0 = the ReLU "
                              "twin)", at=("kwta_ratios", i))
        for i, s in enumerate(self.weight_sparsities):
            if not 0.0 <= s < 1.0:
                raise Invalid(f"{s:g} is outside [0, 1); it is the fraction of weights set to zero (0 = dense)",
                              at=("weight_sparsities", i))
        for i, m in enumerate(self.pruning_methods):
            if m not in PRUNING_METHODS:
                raise Invalid(PRUNING_METHODS.unknown(m).detail, at=("pruning_methods", i))
        for key in self.KEYS:
            values = getattr(self, key)
            if len(set(values)) != len(values):  # name the repeated value and the fix, not only the list
                twice = next(v for i, v in enumerate(values) if v in values[:i])
                raise Invalid(f"duplicate values in {list(values)} ({twice!r} is given twice); give each value once",
                              at=(key,))
            labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
            if len(set(labels)) != len(labels):  # 0.2 and 0.2000001: two rows (or columns) both labelled 0.2
                raise Invalid(f"values that print alike in {list(values)} (the matrices label them {labels}); "
                              "give values that differ in the first 6 digits", at=(key,))

    @classmethod
    def from_dict(cls, data: Any, where: str = "grid") -> "Grid":
        try:
            return parse(cls, data, prefix=where)
        except ConfigError as exc:
            raise as_written(exc, data, where) from None

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
