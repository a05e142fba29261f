"""Mutation round on kwta_robust.snapshot and kwta_robust.heap: the digests that identify a model's weights and
code (re-computed here by hand), mixed devices, putting tensors back (also when the block raised, and never into
a resized tensor), the first differing entry that ModelSnapshot.verify names, backward pre-hooks; the exact mallopt
calls of the heap policy and every way a user tunes glibc's heap."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

from kwta_robust import heap
from kwta_robust.errors import ConfigError
from kwta_robust.snapshot import ModelChangedError, ModelSnapshot, model_device, put_back, source_digest
from kwta_robust.snapshot import state_digest, tensors_put_back


def linear() -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.5, -2.0]]))
        layer.bias.fill_(0.25)
    return layer


def test_state_digest_is_sha256_of_sorted_names_dtypes_shapes_and_bytes() -> None:
    h = hashlib.sha256()  # state_dict order is weight, bias; the digest takes them sorted
    h.update(b"bias|torch.float32|(1,)|" + np.array([0.25], dtype="<f4").tobytes())
    h.update(b"weight|torch.float32|(1, 2)|" + np.array([1.5, -2.0], dtype="<f4").tobytes())
    assert state_digest(linear()) == h.hexdigest()


def test_same_bytes_in_another_dtype_or_shape_are_other_weights() -> None:
    def holder(tensor: torch.Tensor) -> nn.Module:
        module = nn.Module()
        module.register_buffer("b", tensor)
        return module

    zeros = torch.zeros(4, dtype=torch.float32)
    digests = {state_digest(holder(t)) for t in (zeros, zeros.view(torch.int32), zeros.view(2, 2))}
    assert len(digests) == 3


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_source_digest_hashes_the_defining_files_but_not_torchs() -> None:
    assert source_digest(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == hashlib.sha256().hexdigest()
    name = Scale.__module__
    with open(sys.modules[name].__file__, "rb") as handle:
        content = handle.read()
    expected = hashlib.sha256(f"{name}|{len(content)}|".encode() + content).hexdigest()
    assert source_digest(nn.Sequential(nn.Linear(2, 2), Scale())) == expected


def test_mixed_devices_are_refused_and_no_tensors_mean_cpu() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, device="meta"))
    with pytest.raises(ConfigError, match=r"model: tensors on several devices \(\['cpu', 'meta'\]\)"):
        model_device(model)
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_tensors_are_put_back_when_the_block_raises_and_a_resized_tensor_is_left() -> None:
    layer = linear()
    with pytest.raises(ValueError, match="boom"):
        with tensors_put_back(layer):
            with torch.no_grad():
                layer.weight.mul_(3.0)
                layer.bias.add_(1.0)
            raise ValueError("boom")
    assert layer.weight.tolist() == [[1.5, -2.0]] and layer.bias.tolist() == [0.25]
    put_back(layer, {"weight": torch.zeros(3, 3), "missing": torch.ones(1), "bias": torch.tensor([7.0])})
    assert layer.weight.tolist() == [[1.5, -2.0]] and layer.bias.tolist() == [7.0]


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)
        self.register_buffer("count", torch.zeros(3))


def verify_message(model: nn.Module, snap: ModelSnapshot) -> str:
    with pytest.raises(ModelChangedError) as caught:
        snap.verify(model, "attack")
    return str(caught.value)


def test_verify_names_the_first_change_in_sorted_order() -> None:
    model = Pair().eval()
    snap = ModelSnapshot.capture(model)
    model.b.train()
    model.a.train()
    assert verify_message(model, snap) == "attack changed the train/eval flag of module 'a'"
    model = Pair()
    snap = ModelSnapshot.capture(model)
    model.register_buffer("zz_new", torch.zeros(1))
    model.register_buffer("aa_new", torch.zeros(1))
    assert verify_message(model, snap) == "attack changed the model's state_dict or buffer names ('aa_new')"
    model = Pair()
    snap = ModelSnapshot.capture(model)
    model.b.weight.requires_grad_(False)
    model.a.bias.requires_grad_(False)
    assert verify_message(model, snap) == "attack changed requires_grad of parameter 'a.bias'"


def test_a_buffer_of_the_same_values_in_another_dtype_is_a_change() -> None:
    model = Pair()
    snap = ModelSnapshot.capture(model)
    model.count = model.count.to(torch.float64)
    assert verify_message(model, snap).startswith("attack changed the model's 'count'")


def test_a_backward_pre_hook_left_behind_is_named() -> None:
    model = Pair()
    snap = ModelSnapshot.capture(model)
    handle = model.b.register_full_backward_pre_hook(lambda module, grad: None)
    assert verify_message(model, snap) == "attack left the hooks of module 'b' changed"
    handle.remove()
    assert snap.verify(model, "attack") is None


class FakeMallopt:
    def __init__(self, answers: list[int]) -> None:
        self.answers, self.calls = answers, []
        self.argtypes = self.restype = None

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answers[len(self.calls) - 1]


@pytest.mark.parametrize("answers, applied", [([1, 1], True), ([1, 0], False), ([0, 1], False)])
def test_the_policy_is_two_mallopt_calls_and_both_must_succeed(monkeypatch, answers, applied) -> None:
    fake = FakeMallopt(answers)
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: type("Libc", (), {"mallopt": fake})())
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(heap, "runs_on_glibc", lambda: True)
    assert heap.retain_freed_memory() is applied
    # M_MMAP_THRESHOLD (-3) at 32 MiB first, then M_TRIM_THRESHOLD (-1) at 1 GiB (<malloc.h>, man 3 mallopt)
    assert fake.calls == [(-3, 33554432), (-1, 1073741824)][:len(fake.calls)]
    assert len(fake.calls) == (1 if answers[0] == 0 else 2)


def test_every_glibc_heap_variable_and_only_malloc_tunables_count_as_the_users_setting(monkeypatch) -> None:
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "MALLOC_ARENA_MAX"):
        assert heap.user_tuned_heap({name: "1"}) == name
    assert heap.user_tuned_heap({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == "GLIBC_TUNABLES"
    assert heap.user_tuned_heap({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "PATH": "/bin"}) is None
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.user_tuned_heap({}) is None  # the given mapping, not the process environment
    assert heap.user_tuned_heap() == "MALLOC_ARENA_MAX"
