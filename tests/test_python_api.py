"""The Python API (:mod:`kwta_robust.api`): the README's example runs as written; a call leaves the caller's state
(model, RNGs, threads, grad mode, logging, working folder) as it was; the same seed gives the same numbers twice and
the CLI's numbers; bad input is one line."""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwta_robust import api
from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.config import EvalConfig
from kwta_robust.cli import main
from kwta_robust.comparability import settings_differences
from kwta_robust.errors import ConfigError, DataError, KwtaRobustError
from kwta_robust.results import load_record

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- python-api-example -->\n```python\n(.*?)```\n<!-- /python-api-example -->", re.S)
CONFIG = {"dataset": "toy", "n_examples": 12, "batch_size": 6, "seed": 3,
          "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 5}},
                      {"attack": "bpda",
                       "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 5}}}],
          "noise": [{"kind": "gaussian", "levels": [0.1], "draws": 2}]}


class TopK(nn.Module):
    """A top-k gate that is not the package's layer (the layer probe must find it)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (h >= h.topk(4, dim=1).values[:, -1:])


def make_net() -> nn.Module:
    """``--model-factory test_python_api:make_net``: a tiny MLP with a BatchNorm (buffers) and a top-k gate."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), TopK(), nn.Linear(16, 10))


def toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(20, 1, 8, 8, generator=gen), torch.randint(0, 10, (20,), generator=gen)


def caller_state(model: nn.Module) -> dict:
    root = logging.getLogger()
    return {"grad": torch.is_grad_enabled(), "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
            "torch_rng": torch.get_rng_state().tolist(), "numpy_rng": np.random.get_state()[1].tolist(),
            "python_rng": random.getstate(), "logging": (list(root.handlers), root.level),
            "training": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "state": {k: v.tolist() for k, v in model.state_dict().items()}}


def per_sample(record) -> list:
    """What a record measured, without its timings."""
    data = record.to_dict()
    noise = [probe["result"] for probe in data["noise"]]
    return [data["clean"], data["clean_flags"], data["worst_case"], noise,
            [{k: v for k, v in r.items() if k != "wall_time_s"} for r in data["results"]]]


def test_readme_example_runs_as_written(monkeypatch, capsys):
    match = MARKER.search((ROOT / "README.md").read_text())
    assert match, "README.md: the Python API example between its markers is missing"
    monkeypatch.chdir(ROOT)  # the example names eval_configs/quick.yaml
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(match.group(1), "README.md (Python API)", "exec"), namespace)
    out = capsys.readouterr().out
    assert [r.status for r in namespace["records"]] == ["complete", "complete"]
    assert "kwta − relu" in out and "1.0 (ReLU twin)" in out and "found by the probe" in out
    assert namespace["record"].worst("linf", 0.1) is not None and namespace["quick"].dataset["name"] == "mnist5k"


def test_caller_state_is_left_alone_and_same_seed_same_numbers(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    model, (x, y) = make_net(), toy_data()
    model.train()  # the caller's mode, kept
    x_before, y_before = x.clone(), y.clone()
    torch.manual_seed(11), np.random.seed(12), random.seed(13)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = caller_state(model)
        first = evaluate_model(model, CONFIG, x, y, label="mine", threads=1)
        assert caller_state(model) == before
        assert first.provenance["torch_threads"] == 1
        second = evaluate_model(model, CONFIG, x, y, label="mine", threads=1)
    finally:
        torch.set_num_threads(previous)
    assert per_sample(first) == per_sample(second)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert first.model["activation"] == "top-k (detected)" and first.model["activation_layers"] == "none"
    assert first.dataset["name"] == "in-memory"
    assert [layer["module_class"] for layer in first.detection["layers"]] == ["TopK"]  # found by the layer probe
    assert list(tmp_path.iterdir()) == []  # no out_path: no file


def test_compare_in_memory_writes_nothing_and_pairs_the_models(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    kwta = make_net().eval()
    relu = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x, y = toy_data()
    records = compare_models_in_memory({"kwta": kwta, "relu": relu}, CONFIG, x.numpy(), y.numpy(),
                                       grid_cells={"kwta": "kwta_ratio=0.25,weight_sparsity=0"})
    assert [r.label for r in records] == ["kwta", "relu"]
    assert records[0].model["grid_cell"]["kwta_ratio"] == 0.25 and "grid_cell" not in records[1].model
    assert records[0].dataset["indices"] == records[1].dataset["indices"]
    assert {r.label for r in records[0].results} >= {"pgd", "bpda", "transfer"}
    assert list(tmp_path.iterdir()) == []
    assert all(u.settings is not None for r in records for u in r.results)
    assert settings_differences([(r.label, r) for r in records]) == []  # other sources, BPDA layers: no setting


def test_same_numbers_as_the_cli(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    model, (x, y) = make_net().eval(), toy_data()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    (tmp_path / "eval.yaml").write_text(__import__("json").dumps(CONFIG))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["-q", "evaluate", "--model-factory", "test_python_api:make_net", "--weights",
                     str(tmp_path / "net.pt"), "--config", str(tmp_path / "eval.yaml"), "--data",
                     str(tmp_path / "data.pt"), "--out", str(tmp_path / "cli.json"), "--no-progress"]) == 0
    mine = evaluate_model(model, tmp_path / "eval.yaml", x, y, threads=1)
    assert per_sample(mine) == per_sample(load_record(tmp_path / "cli.json"))


@pytest.mark.parametrize("call, error, words", [
    (lambda m, x, y: evaluate_model(m, CONFIG, x, y + 5), DataError, "label 14 but the model has 10 classes"),
    (lambda m, x, y: evaluate_model(m, CONFIG, x), ConfigError, "give both x and y"),
    (lambda m, x, y: evaluate_model(m, 3, x, y), ConfigError, "config: expected an EvalConfig"),
    (lambda m, x, y: evaluate_model(m, CONFIG, x - 0.5, y), DataError, "normalize inside the model"),
    (lambda m, x, y: evaluate_model(m, CONFIG, x, y, grid_cell={"ratio": 1}), ConfigError, "unknown key 'ratio'"),
    (lambda m, x, y: evaluate_model(m, CONFIG, x, y, threads=-1), ConfigError, "threads: must be"),
    (lambda m, x, y: compare_models_in_memory({"a": m}, CONFIG, x, y), ConfigError, "at least two models"),
])
def test_bad_input_is_one_line(call, error, words):
    x, y = toy_data()
    with pytest.raises(error, match=re.escape(words)) as caught:
        call(make_net().eval(), x, y)
    assert "\n" not in str(caught.value)


def test_an_attacks_own_check_is_a_kwta_robust_error():
    """An attack refusing the model at run time (DLR needs >= 3 classes) is bad input like any other."""
    x, y = toy_data()
    two_classes = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    config = {**CONFIG, "attacks": [{"attack": "apgd-dlr", "params": {"steps": 2}}], "noise": []}
    with pytest.raises(KwtaRobustError, match=re.escape("attack 'apgd-dlr' needs a model with at least 3 classes")) \
            as caught:
        evaluate_model(two_classes, config, x, y % 2)
    assert "\n" not in str(caught.value)


def test_a_config_naming_another_device_is_refused_not_ignored(monkeypatch):
    monkeypatch.setattr("kwta_robust.api.resolve_device", lambda spec: torch.device("cuda", 0))  # a GPU host
    x, y = toy_data()
    with pytest.raises(ConfigError, match=re.escape("device: the config says cuda but model 'model' is on cpu; move "
                                                    "the model (model.to('cuda:0')) or set device: auto")):
        evaluate_model(make_net().eval(), {**CONFIG, "device": "cuda"}, x, y)


def test_a_record_of_other_weights_at_out_path_is_refused_in_the_api_words(tmp_path):
    model, (x, y) = make_net().eval(), toy_data()
    out = tmp_path / "mine.json"
    first = evaluate_model(model, CONFIG, x, y, out_path=out)
    assert per_sample(evaluate_model(model, CONFIG, x, y, out_path=out)) == per_sample(first)  # resumed: all kept
    with torch.no_grad():
        model[1].weight.add_(0.01)
    with pytest.raises(ConfigError, match=re.escape(f"out_path: {out} holds a record of other model weights; use a "
                                                    "new out_path or resume=False")):
        evaluate_model(model, CONFIG, x, y, out_path=out)
    assert evaluate_model(model, CONFIG, x, y, out_path=out, resume=False).status == "complete"


def test_compare_with_out_dir_writes_one_record_per_label_with_its_grid_cell(tmp_path):
    x, y = toy_data()
    records = compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()}, CONFIG, x, y,
                                       out_dir=tmp_path / "cmp", grid_cells={"a": "kwta_ratio=0.25,weight_sparsity=0"})
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["a.json", "b.json"]
    assert load_record(tmp_path / "cmp" / "a.json").model["grid_cell"] == records[0].model["grid_cell"]


def test_a_dict_config_given_with_x_and_y_may_leave_out_the_data_set():
    """With ``x`` and ``y`` given the config's ``dataset`` is replaced by ``data_name``, yet a dict without it was
    refused (``config: missing key 'dataset'``); without ``x`` the config's data set is still required."""
    x, y = toy_data()
    config = {key: value for key, value in CONFIG.items() if key != "dataset"}
    record = evaluate_model(make_net().eval(), config, x, y, data_name="my-digits")
    assert record.dataset["name"] == "my-digits" and record.config["dataset"] == "my-digits"
    with pytest.raises(ConfigError, match=re.escape("config: missing key 'dataset'")):
        evaluate_model(make_net().eval(), config)


def test_a_model_moved_with_to_cuda_is_on_the_configs_cuda(monkeypatch):
    """``model.to("cuda")`` reports ``cuda:0``; the config's ``cuda`` has no index: one device (the current one),
    not a refusal naming the model's own device (``torch.device("cuda") != torch.device("cuda:0")``)."""
    monkeypatch.setattr("kwta_robust.api.resolve_device", lambda spec: torch.device("cuda"))  # a host with a GPU
    monkeypatch.setattr("kwta_robust.api.model_device", lambda model: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    x, y = toy_data()
    cfg = EvalConfig.from_dict({**CONFIG, "device": "cuda"})
    data, named = api._data(cfg, {"model": make_net().eval()}, x, y, "mine", api._DIR_STALE)
    assert named.dataset == "mine" and len(data) == len(x)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # cuda means device 1 now: the model is elsewhere
    with pytest.raises(ConfigError, match=re.escape("device: the config says cuda but model 'model' is on cuda:0")):
        api._data(cfg, {"model": make_net().eval()}, x, y, "mine", api._DIR_STALE)
