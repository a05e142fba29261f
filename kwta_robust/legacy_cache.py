"""torchvision's legacy MNIST cache (``MNIST/processed/training.pt`` and ``test.pt``), checked before torchvision
reads it.

torchvision reads those pickled files instead of the raw idx files wherever both are there. The torchvision
releases the package's pins allow do not all load them alike — the installed one passes ``weights_only=True``,
older ones may unpickle them in full — and a ``data_root`` can come from a config someone shared, so a file put
there could run code when an evaluation opens the data. :func:`check_legacy_cache` loads each file first with
``weights_only=True`` (tensors and plain containers only): one that needs any other Python object is refused in one
line before torchvision opens it; one that is damaged is left to torchvision's read, whose error names it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import torch

from kwta_robust.errors import DataError
from kwta_robust.safe_paths import shown_path
from kwta_robust.weights_read import refused_global


def check_legacy_cache(name: str, files: Sequence[Path]) -> None:
    """Raise :class:`DataError` for a file of ``files`` (a legacy cache, data set ``name``) that holds Python
    objects a weights-only load refuses; return when each loads so, or is damaged otherwise."""
    for path in files:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if refused_global(exc) is not None:  # a class or function pickled in it, not a damaged file
                raise DataError(f"{name}: {shown_path(path)} (torchvision's legacy cache, read instead of raw/) holds "
                                "Python objects that need pickle to load (it can run code), not cached tensors; "
                                f"remove {shown_path(path.parent)} so that torchvision reads raw/") from None
        except (RuntimeError, OSError, EOFError, ValueError):  # damaged: torchvision's read names it, as before
            continue
