"""``--factory-kwargs`` values are checked inside sequences and mappings against the factory's annotation
(``list[int]``, ``tuple[int, ...]``, ``tuple[A, B]`` of that length, ``dict[K, V]``, unions and ``Literal`` of
these), naming the path inside the argument (``widths[1]``, ``sizes['a']``). Before, only a ``list``'s items were
checked and only by the whole argument: ``{"a": "x"}`` for ``dict[str, int]`` or ``[1, 2, 3]`` for
``tuple[int, int]`` reached the factory (a traceback deep inside it, or a wrong model built silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import pytest
import torch
from torch import nn

from kwta_robust.errors import CheckpointError
from kwta_robust.factory_args import check_factory_arguments
from test_cli_eval import run_error, write_config

TAIL = "; pass a value of that type in --factory-kwargs"


def make(widths: list[int] = (4,), sizes: dict[str, int] | None = None, shape: tuple[int, int] = (1, 1),
         scales: tuple[float, ...] = (), pairs: Optional[list[tuple[int, int]]] = None,
         mode: Literal["a", "b"] = "a", free: dict = None, module: list[nn.Module] = ()) -> None:
    """A factory annotated with the common typing forms (``free`` and ``module``'s items are not checked)."""


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"widths": [4, "x"]}, "argument 'widths' expects list[int]; widths[1] is 'x' (str), not int"),
    ({"sizes": {"a": "x"}}, "argument 'sizes' expects dict[str, int] | None; sizes['a'] is 'x' (str), not int"),
    ({"sizes": {"a": 1, "b": [2]}},
     "argument 'sizes' expects dict[str, int] | None; sizes['b'] is [2] (list), not int"),
    ({"sizes": {3: 1}}, "argument 'sizes' expects dict[str, int] | None; sizes key 3 is 3 (int), not str"),
    ({"shape": [1, 2, 3]}, "argument 'shape' expects tuple[int, int], got [1, 2, 3] (list)"),
    ({"shape": [1]}, "argument 'shape' expects tuple[int, int], got [1] (list)"),
    ({"shape": [1, 2.5]}, "argument 'shape' expects tuple[int, int]; shape[1] is 2.5 (float), not int"),
    ({"scales": [0.5, 1, "2"]}, "argument 'scales' expects tuple[float, ...]; scales[2] is '2' (str), not float"),
    ({"pairs": [[1, 2], [3, True]]},
     "argument 'pairs' expects Optional[list[tuple[int, int]]]; pairs[1][1] is True (bool), not int"),
    ({"pairs": [[1, 2], [3]]},
     "argument 'pairs' expects Optional[list[tuple[int, int]]]; pairs[1] is [3] (list), not tuple[int, int]"),
    ({"pairs": 5}, "argument 'pairs' expects Optional[list[tuple[int, int]]], got 5 (int)"),
    ({"mode": "c"}, "argument 'mode' expects Literal['a', 'b'], got 'c' (str)"),
])
def test_inner_values_are_checked_with_their_path(kwargs: dict, message: str) -> None:
    with pytest.raises(CheckpointError) as info:
        check_factory_arguments("m:make", make, kwargs)
    assert str(info.value) == f"model factory 'm:make': {message}{TAIL}"


def test_values_that_fit_and_unchecked_annotations_pass() -> None:
    check_factory_arguments("m:make", make, {
        "widths": [1, 2], "sizes": {"a": 1}, "shape": [1, 2], "scales": [1, 2.5], "pairs": [[1, 2], (3, 4)],
        "mode": "b", "free": {"a": object()}, "module": ["not a module"]})  # dict and list[nn.Module] unchecked
    check_factory_arguments("m:make", make, {"sizes": None, "pairs": None})


class Widths(nn.Module):
    """A model whose hidden layer widths come from ``widths``."""

    def __init__(self, widths: tuple[int, int]) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, widths[0]), nn.ReLU(), nn.Linear(widths[0], 10))


def make_widths(widths: tuple[int, int] = (16, 16)) -> nn.Module:
    """Factory used through ``test_edges_factory_inner_types:make_widths``: ``[16, 16, 16]`` built a model silently."""
    torch.manual_seed(0)
    return Widths(widths)


def test_evaluate_exits_2_with_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, attacks=["fgsm"], noise=[])
    factory = "test_edges_factory_inner_types:make_widths"
    for given, words in (('{"widths": [16, 16, 16]}', "expects tuple[int, int], got [16, 16, 16] (list)"),
                         ('{"widths": [16, "16"]}', "expects tuple[int, int]; widths[1] is '16' (str), not int")):
        line = run_error(capsys, ["evaluate", "--config", str(cfg), "--model-factory", factory, "--factory-kwargs",
                                  given, "--out", str(tmp_path / "r.json"), "--no-progress"])
        assert line == f"error: model factory '{factory}': argument 'widths' {words}{TAIL}"
    assert not (tmp_path / "r.json").exists()
