"""Persona walk 51b: ``--data-root`` naming the data set's own folder (``cifar-10-batches-py/``, ``MNIST/`` or
``MNIST/raw/``, where the files are) said only "data not found at .../cifar-10-batches-py/cifar-10-batches-py; pass
--data-root pointing at the folder that holds it". It now names where the data are and the folder to pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.data import load_dataset
from kwta_robust.errors import DataError


@pytest.mark.parametrize(("name", "inner", "given"), [
    ("cifar10", "cifar-10-batches-py", "cifar-10-batches-py"),
    ("mnist", "MNIST/raw", "MNIST"),
    ("mnist", "MNIST/raw", "MNIST/raw"),
])
def test_the_set_s_own_folder_as_data_root_names_its_parent(tmp_path: Path, name: str, inner: str, given: str) -> None:
    (tmp_path / inner).mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_dataset(name, "test", root=tmp_path / given)
    assert str(info.value) == (f"{name}: data not found at {tmp_path / given / inner}, but found at "
                               f"{tmp_path / inner}; pass --data-root {tmp_path} (data_root: in YAML), the folder "
                               "holding that folder")
    with pytest.raises(DataError, match=r"data not found at .*; pass --data-root \(data_root: in YAML\) pointing at"):
        load_dataset(name, "test", root=tmp_path / "a" / "b" / "c")  # no data near: as before
