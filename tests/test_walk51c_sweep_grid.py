"""Persona walk 51c: a sweep grid that repeats a value names the value and the fix in its one error line."""
import pytest

from attacks.errors import ConfigError
from kwta_robust.sweep.grid import Grid


@pytest.mark.parametrize("data, expected", [
    ({"kwta_ratios": [1.0, 0.2, 0.2], "weight_sparsities": [0.0]},
     "grid.kwta_ratios: duplicate values in [1.0, 0.2, 0.2] (0.2 is given twice); give each value once"),
    ({"kwta_ratios": [1.0], "weight_sparsities": [0.5, 0.0, 0.5]},
     "grid.weight_sparsities: duplicate values in [0.5, 0.0, 0.5] (0.5 is given twice); give each value once"),
    ({"kwta_ratios": [1.0], "weight_sparsities": [0.5], "pruning_methods": ["magnitude", "magnitude"]},
     "grid.pruning_methods: duplicate values in ['magnitude', 'magnitude'] ('magnitude' is given twice); "
     "give each value once"),
])
def test_duplicate_grid_value_is_named_with_the_fix(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Grid.from_dict(data)
    assert str(info.value) == expected
    assert "\n" not in str(info.value)
