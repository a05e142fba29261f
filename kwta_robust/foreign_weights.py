"""Weights files written by other code bases, brought to the key set of the model they are loaded into.

Released checkpoints come in a few shapes besides a plain ``torch.save(model.state_dict())``. Before the strict
key check of :func:`kwta_robust.checkpoint.load_byo_model`, :func:`normalize_state_dict` applies these
normalizations, each only when the file needs it, and reports every one it made (they go into the record's
model metadata as ``weights_normalization``):

1. **Wrappers** — a dict holding the state_dict under ``state_dict``, ``model_state_dict``, ``model`` or ``net``
   (training scripts save ``{"epoch": ..., "state_dict": ...}``) is unwrapped, repeatedly if nested; two
   different state_dicts under two of these names are refused (which one to evaluate is not the file's to say).
2. **Prefixes** — ``module.`` (``nn.DataParallel`` / ``DistributedDataParallel``) and ``_orig_mod.``
   (``torch.compile``) are stripped when *every* key carries them and the model's keys do not, and added when every
   key of the model carries one and the file's none. Any other first name that every key carries (``model.``, a
   LightningModule's ``self.model``) is stripped when the keys without it are exactly the model's (BatchNorm
   counters aside, which item 4 fills).
3. **Tied tensors** — names the model ties to one tensor that the file holds under one of them only (safetensors
   stores a tied tensor once) take that tensor (:func:`fill_tied`).
4. **BatchNorm counters** — ``<bn>.num_batches_tracked`` (added in PyTorch 0.4.1; unused in eval mode) is taken
   from the model when the file lacks it but has that layer's running statistics.
5. **Sparse storage** — a tensor saved in a sparse layout (``weight.to_sparse()``, how pruned weights are often
   stored) is made dense; ``load_state_dict`` cannot copy it into the model's dense parameter.
6. **Pruning reparametrization** (``torch.nn.utils.prune``) — a pruned layer's state_dict holds ``<name>_orig`` and
   ``<name>_mask`` instead of ``<name>`` until ``prune.remove`` is called. When the file has the pair and the model
   the plain tensor, the pair is folded into ``<name> = <name>_orig * <name>_mask`` (the weight the pruned layer
   computes with); when the model is pruned and the file is not, ``<name>_orig`` takes the file's tensor and
   ``<name>_mask`` its nonzero pattern, so the model computes the file's weight exactly. Either way the pruned
   entries are exact zeros, which the record's ``weight_sparsity`` counts. A mask that is not a 0/1 tensor of its
   weight's shape, or a file holding ``<name>`` beside the pair, is one line naming the key.

Anything else (a missing or extra key, a shape mismatch) is left to the strict check, which names the key; keys of
``torch.nn.utils.parametrize`` (``<layer>.parametrizations.<name>.original``) cannot be folded without the
parametrization's code, and that check says so.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.errors import CheckpointError

WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net")
PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: Suffixes of the two tensors ``torch.nn.utils.prune`` keeps for a pruned ``<name>``.
PRUNE_ORIG, PRUNE_MASK = "_orig", "_mask"


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping from names to tensors."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _same_weights(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two wrapper entries holding the same tensors (a checkpoint may store one state_dict under two names)."""
    def same(x: Tensor, y: Tensor) -> bool:
        x, y = (t.to_dense() if t.layout != torch.strided else t for t in (x, y))
        return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y))

    return a.keys() == b.keys() and all(a[k] is b[k] or same(a[k], b[k]) for k in a)


#: The longest text a checkpoint entry beside the weights may be to be kept (:func:`checkpoint_entries`).
MAX_ENTRY_TEXT = 200
#: The most entries kept (:func:`checkpoint_entries`).
MAX_ENTRIES = 32


def _scalar(value: Any) -> Any:
    """``value`` as a plain JSON scalar where it is one (a number, a bool, a text of at most :data:`MAX_ENTRY_TEXT`
    characters, a one-element tensor or a NumPy scalar as its number; NaN and infinity are left out), else ``None``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    elif type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2 ** 63):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str) and len(value) <= MAX_ENTRY_TEXT else None


def checkpoint_entries(payload: Any) -> dict[str, Any]:
    """The scalar entries a training script saved beside the weights (``{'net': state_dict, 'acc': 91.2, 'epoch':
    80}`` in kuangliu's pytorch-cifar and Xiao et al.'s kWTA code): numbers, bools and short texts
    (:func:`_scalar`), at most :data:`MAX_ENTRIES`, named by their key (``outer.key`` inside a nested wrapper),
    found along the wrappers :func:`unwrap` follows; ``{}`` for a plain state_dict. The record keeps them
    (``model.training.checkpoint_meta``), and the diagnostics compare a claimed accuracy with the measured one
    (:mod:`kwta_robust.checkpoint_checks`). Optimizer states, argument namespaces and other objects are left out."""
    found: dict[str, Any] = {}
    prefix = ""
    for _ in range(len(WRAPPER_KEYS) + 1):
        if not isinstance(payload, Mapping) or is_state_dict(payload):
            break
        for key, value in payload.items():
            kept = _scalar(value) if isinstance(key, str) and key not in WRAPPER_KEYS else None
            if kept is not None and len(found) < MAX_ENTRIES:
                found[prefix + key] = kept
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(payload.get(k), Mapping)), None)
        if wrapper is None:
            break
        payload, prefix = payload[wrapper], f"{prefix}{wrapper}."
    return found


def unwrap(payload: Any, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """The state_dict inside ``payload`` (itself, or under one of :data:`WRAPPER_KEYS`) and the notes."""
    notes: list[str] = []
    for _ in range(len(WRAPPER_KEYS) + 1):
        if is_state_dict(payload):
            named = next((k for k in payload if not isinstance(k, str)), None)
            if named is not None:
                raise CheckpointError(f"{source}: state_dict key {named!r} ({type(named).__name__}) is not a parameter "
                                      "name; save the weights with torch.save(model.state_dict(), FILE), whose keys "
                                      "are names like '0.weight'")
            return dict(payload), notes
        if not isinstance(payload, Mapping):
            break
        keys = [k for k in WRAPPER_KEYS if isinstance(payload.get(k), Mapping)]
        if not keys:
            break
        key = keys[0]
        other = next((k for k in keys[1:] if is_state_dict(payload[key]) and is_state_dict(payload[k])
                      and not _same_weights(payload[key], payload[k])), None)
        if other is not None:  # e.g. the last epoch's weights beside the best ones: taking either silently is a guess
            raise CheckpointError(f"{source}: the file holds two different state_dicts, under {key!r} and {other!r}; "
                                  "save the one to evaluate alone with torch.save(state_dict, FILE)")
        notes.append(f"unwrapped the state_dict from the {key!r} entry")
        payload = payload[key]
    found = (f"a mapping with keys {sorted(map(str, payload))[:6]}" if isinstance(payload, Mapping)
             else type(payload).__name__)
    raise CheckpointError(
        f"{source}: not a state_dict (found {found}); save one with torch.save(model.state_dict(), FILE) or wrap it "
        f"under one of {', '.join(WRAPPER_KEYS)}"
    )


def strip_prefixes(state: dict[str, Tensor], expected: Mapping[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """Remove a prefix from every key when all keys carry it and the model's keys do not; add one to every key when
    the model's keys all carry it and the file's none (a factory returning its network wrapped, ``self.module =
    net``, given the plain network's weights)."""
    notes: list[str] = []
    for prefix in PREFIXES:
        if state and expected and all(k.startswith(prefix) for k in expected) \
                and not any(k.startswith(prefix) for k in state):
            state = {prefix + k: v for k, v in state.items()}
            notes.append(f"added the {prefix!r} prefix to {len(state)} keys (the model's keys all carry it)")
            return state, notes
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
                state = {k[len(prefix):]: v for k, v in state.items()}
                notes.append(f"stripped the {prefix!r} prefix from {len(state)} keys")
                changed = True
    return _strip_wrapper_name(state, expected, notes)


def _strip_wrapper_name(state: dict[str, Tensor], expected: Mapping[str, Any],
                        notes: list[str]) -> tuple[dict[str, Tensor], list[str]]:
    """Strip the first name every key carries (``model.``: a LightningModule's ``self.model``) when the stripped
    keys are exactly the model's (BatchNorm counters aside) and the file's keys are not."""
    head = next(iter(state), "").split(".", 1)[0] + "."
    if head == "." or set(state) == set(expected) or not all(k.startswith(head) and k != head for k in state):
        return state, notes
    stripped = {k[len(head):]: v for k, v in state.items()}
    if not set(stripped) <= set(expected) or any(
            not k.endswith("num_batches_tracked") for k in set(expected) - set(stripped)):
        return state, notes
    notes.append(f"stripped the {head!r} prefix from {len(stripped)} keys (every key carries it; without it they are "
                 "the model's)")
    return stripped, notes


def fill_batchnorm_counters(state: dict[str, Tensor],
                            expected: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Add missing ``num_batches_tracked`` entries from the model for layers whose statistics the file has."""
    missing = [k for k in expected if k.endswith(".num_batches_tracked") and k not in state
               and k[: -len("num_batches_tracked")] + "running_mean" in state]
    if not missing:
        return state, []
    state = dict(state)
    for key in missing:
        state[key] = expected[key].detach().clone()
    return state, [f"took num_batches_tracked of {len(missing)} BatchNorm layers from the model (absent in the file)"]


def fill_tied(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Names the model ties to one tensor (a module registered twice, an output layer sharing its embedding's weight)
    that the file holds under some of them only take its tensor: safetensors refuses to store a tensor twice, so
    ``safetensors.torch.save_model`` keeps one name of each tied group (they are one tensor in the model)."""
    groups: dict[tuple, list[str]] = {}
    for key, value in expected.items():
        if isinstance(value, Tensor) and value.layout == torch.strided and value.numel() and not value.is_meta:
            where = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                     tuple(value.stride()), value.dtype)
            groups.setdefault(where, []).append(key)
    filled: list[str] = []
    for names in groups.values():
        held = next((k for k in names if k in state), None)
        for key in names if held is not None and len(names) > 1 else ():
            if key not in state:
                state = state if filled else dict(state)
                state[key] = state[held]
                filled.append(key)
    if not filled:
        return state, []
    return state, [f"took {len(filled)} tied tensors from the name the file holds them under (the model ties them; "
                   f"safetensors stores a tied tensor once): {_first_names(filled)}"]


def dtype_notes(state: Mapping[str, Any], expected: Mapping[str, Tensor]) -> list[str]:
    """What loading converts: floating-point entries whose dtype differs from the model's (``load_state_dict``
    copies a float16 or float64 file into the model's float32 tensors: a float16 file's rounding stays)."""
    changed: dict[tuple[str, str], int] = {}
    for key, value in state.items():
        target = expected.get(key)
        if isinstance(value, Tensor) and isinstance(target, Tensor) and value.is_floating_point() \
                and target.is_floating_point() and value.dtype != target.dtype:
            pair = (str(value.dtype).removeprefix("torch."), str(target.dtype).removeprefix("torch."))
            changed[pair] = changed.get(pair, 0) + 1
    return [f"converted {count} tensors from {src} to the model's {dst}" for (src, dst), count in changed.items()]


def check_dtypes(state: Mapping[str, Any], model: nn.Module, source: str,
                 expected: Mapping[str, Tensor] | None = None) -> None:
    """A file tensor that ``load_state_dict`` would silently turn into other weights stops with one line: a complex
    one (the imaginary part dropped) for any floating-point tensor of the model, and integers or booleans for a
    floating-point *parameter* (a quantized or cast export: the trained weights are gone). Buffers may hold 0/1
    masks as integers or booleans, which convert exactly."""
    expected = model.state_dict() if expected is None else expected
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}  # a tied one under each name
    for key, value in state.items():
        target = expected.get(key)
        if not (isinstance(value, Tensor) and isinstance(target, Tensor) and target.is_floating_point()):
            continue
        if value.is_complex() or (key in parameters and not value.is_floating_point()):
            kind = "complex" if value.is_complex() else "not floating-point"
            raise CheckpointError(
                f"{source}: {key!r} is {str(value.dtype).removeprefix('torch.')} ({kind}) but the model's tensor is "
                f"{str(target.dtype).removeprefix('torch.')}; these are not the trained weights: save the "
                "floating-point ones (torch.save(model.state_dict(), FILE) before any quantization or cast)")


def densify(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Tensors stored in a sparse layout (COO, CSR, ...) made dense; the same values."""
    sparse = [k for k, v in state.items() if v.layout != torch.strided]
    if not sparse:
        return state, []
    state = {k: v.to_dense() if k in sparse else v for k, v in state.items()}
    return state, [f"made {len(sparse)} sparse-layout tensors dense"]


def _pruned_pairs(keys: Iterable[str]) -> list[str]:
    """The ``<layer>.<name>`` of every ``<name>_orig`` / ``<name>_mask`` pair among ``keys`` (torch's pruning)."""
    keys = set(keys)
    return sorted(k[: -len(PRUNE_ORIG)] for k in keys
                  if k.endswith(PRUNE_ORIG) and k[: -len(PRUNE_ORIG)] + PRUNE_MASK in keys)


def _first_names(names: list[str]) -> str:
    """The first four of ``names``, comma-separated, ``, ...`` when there are more."""
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _check_mask(state: Mapping[str, Tensor], base: str, source: str) -> None:
    """``CheckpointError`` unless ``<base>_mask`` is a 0/1 mask of ``<base>_orig``'s shape (what torch's pruning
    saves) and the file holds no other ``<base>`` (a damaged mask was broadcast or scaled the weights silently)."""
    orig, mask = state[base + PRUNE_ORIG], state[base + PRUNE_MASK]
    key = base + PRUNE_MASK
    if mask.shape != orig.shape:
        raise CheckpointError(f"{source}: pruning mask {key!r} has shape {tuple(mask.shape)}, not its weight's "
                              f"{tuple(orig.shape)}; save the pruned model's state_dict as torch.nn.utils.prune "
                              "writes it (or call prune.remove before saving)")
    binary = (mask == 0) | (mask == 1)
    if mask.is_complex() or not bool(binary.all()):
        bad = mask[~binary].flatten()[:1].tolist()
        got = f"{bad[0]}" if bad else f"dtype {str(mask.dtype).removeprefix('torch.')}"
        raise CheckpointError(f"{source}: pruning mask {key!r} holds {got}, not only 0 and 1; save the pruned "
                              "model's state_dict as torch.nn.utils.prune writes it (or call prune.remove before "
                              "saving)")
    if base in state:
        raise CheckpointError(f"{source}: the file holds both {base!r} and the pruned pair {base + PRUNE_ORIG!r} / "
                              f"{key!r}; which weight to evaluate is not the file's to say: save one of them "
                              "(prune.remove before saving keeps only the pruned weight)")


def unfold_pruning(state: dict[str, Tensor], expected: Mapping[str, Tensor],
                   source: str = "weights") -> tuple[dict[str, Tensor], list[str]]:
    """Bring ``torch.nn.utils.prune``'s reparametrization to the model's side (module docstring, item 6)."""
    notes: list[str] = []
    fold = [base for base in _pruned_pairs(state)
            if base in expected and base + PRUNE_ORIG not in expected and base + PRUNE_MASK not in expected]
    # a pair the pruned model loads as it is: its mask too (a file holding <name> beside it is the strict check's)
    kept = [base for base in _pruned_pairs(state) if base + PRUNE_MASK in expected and base not in state]
    for base in fold + kept:
        _check_mask(state, base, source)
    if fold:
        state = dict(state)
        for base in fold:
            orig, mask = state.pop(base + PRUNE_ORIG), state.pop(base + PRUNE_MASK)
            state[base] = (orig * mask).to(orig.dtype)
        notes.append(f"folded {len(fold)} pruned tensors (torch.nn.utils.prune's <name>_orig * <name>_mask) into "
                     f"<name>: {_first_names(fold)}")
    spread = [base for base in _pruned_pairs(expected)
              if base in state and base not in expected and base + PRUNE_ORIG not in state
              and base + PRUNE_MASK not in state]
    if spread:
        state = dict(state)
        for base in spread:
            value = state.pop(base)
            state[base + PRUNE_ORIG] = value
            state[base + PRUNE_MASK] = (value != 0).to(expected[base + PRUNE_MASK].dtype)
        notes.append(f"the model is pruned (torch.nn.utils.prune) and the file is not: {len(spread)} <name>_orig "
                     f"from the file's <name> and <name>_mask from its nonzero entries (the same weights): "
                     f"{_first_names(spread)}")
    return state, notes


def normalize_state_dict(payload: Any, model: nn.Module, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """``payload`` (as read by ``torch.load``) as a state_dict keyed like ``model``, and what was changed."""
    state, notes = unwrap(payload, source)
    expected = model.state_dict()
    state, more = strip_prefixes(state, expected)
    notes += more
    state, more = fill_tied(state, expected)
    notes += more
    state, more = fill_batchnorm_counters(state, expected)
    notes += more
    state, more = densify(state)
    notes += more
    state, more = unfold_pruning(state, expected, source)
    check_dtypes(state, model, source, expected)
    return state, notes + more + dtype_notes(state, expected)
