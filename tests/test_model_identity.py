"""Your own model, resumed, compared and probed: a record is resumed only for the same factory, factory arguments
and model code (not only the same weights); ``compare`` takes your models as ``package.module:function=WEIGHTS``
and its tables name the gates the layer probe found; a model that changes its own state in eval mode stops the
run with one line; the probe that reads a model's number of classes leaves a model in train mode as it was."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.datafile import model_num_classes
from kwta_robust.errors import DataError
from kwta_robust.layers import KWTA
from kwta_robust.results import load_record

GATE_MODULE = '''
import torch
from torch import nn


class TopFour(nn.Module):
    """A top-4 gate of the user's own; ``straight_through`` changes only its backward pass."""

    def __init__(self, straight_through=False):
        super().__init__()
        self.straight_through = straight_through
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.count_calls = False

    def forward(self, x):
        if self.count_calls:
            self.calls += 1  # a state update in eval mode: what evaluation must refuse
        mask = (x >= x.topk(4, dim=1).values[:, -1:]).to(x.dtype)
        return x * mask + (x - x.detach()) * (1 - mask) if self.straight_through else x * mask


def make(straight_through=False, count_calls=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), TopFour(straight_through), nn.Linear(16, 10))
    model[2].count_calls = count_calls
    return model


def make_relu():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
'''


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> tuple[list[str], Path]:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(GATE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"dataset": "mnist5k", "n_examples": 8, "batch_size": 8, "device": "cpu",
              "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "r.json"
    argv = ["evaluate", "--model-factory", f"{module}:make", "--config", str(tmp_path / "c.yaml"), "--out", str(out),
            "--no-progress"]
    return argv, out


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line, = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_a_record_is_resumed_only_for_the_same_factory_arguments_and_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "identity_gate")
    assert main(argv) == 0
    record = load_record(out)
    assert len(record.model["model_source_sha256"]) == 64
    assert main(argv) == 0  # the same model and config: resumed, nothing to redo
    assert load_record(out).results[0].flags == record.results[0].flags
    capsys.readouterr()
    # the same weights and forward pass, another backward (the clean predictions cannot tell them apart)
    line = _error(capsys, [*argv, "--factory-kwargs", '{"straight_through": true}'])
    assert line.endswith("holds a record of other factory arguments; use a new --out or --no-resume")
    source = tmp_path / "identity_gate.py"
    source.write_text(source.read_text() + "\n# the layer's code edited\n")
    line = _error(capsys, argv)
    assert "holds a record of other model code (a source file of its modules changed)" in line


def test_compare_takes_your_own_models_and_names_their_gates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    argv, _ = _setup(tmp_path, monkeypatch, "compare_gate")
    config, weights = argv[argv.index("--config") + 1], tmp_path / "gated.pt"
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Identity(), nn.Linear(16, 10))
    torch.save({**model.state_dict(), "2.calls": torch.zeros((), dtype=torch.long)}, weights)
    out_dir = tmp_path / "cmp"
    assert main(["compare", f"compare_gate:make={weights}", "compare_gate:make_relu", "--config", config,
                 "--out-dir", str(out_dir), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| gated     | top-k 0.25 dense (1 found by the probe) |" in table
    assert "| make_relu | relu " in table
    gated = load_record(out_dir / "gated.json")
    assert gated.model["training"]["model_factory"] == "compare_gate:make"
    assert gated.model["training"]["weights"] == str(weights)
    assert load_record(out_dir / "make_relu.json").model["training"]["weights"] is None
    warned, = [r.getMessage() for r in caplog.records if "no weights file given" in r.getMessage()]
    assert warned.startswith("model factory compare_gate:make_relu: no weights file given")
    line = _error(capsys, ["compare", str(out_dir / "a.pt"), str(out_dir / "b.pt"), "--config", config,
                           "--factory-kwargs", "{}"])
    assert "--factory-kwargs: only used with models given as package.module:function=WEIGHTS" in line


def test_a_model_that_changes_its_state_in_eval_mode_stops_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "counting_gate")
    line = _error(capsys, [*argv, "--factory-kwargs", '{"count_calls": true}'])
    assert "changed the model's '2.calls': parameters and buffers must stay as they were" in line
    assert "only when self.training" in line


def test_reading_the_number_of_classes_leaves_a_training_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 7)).train()
    model[3].eval()  # a mixed mode: restored module by module
    model[1].momentum = 1.0  # any statistics update would show at once
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    assert model_num_classes(model, torch.rand(1, 1, 28, 28)) == 7
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert model[3].weight.grad is None


def test_a_model_that_changes_its_state_is_refused_at_its_first_forward_and_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    """Caught at the first forward, before the layout and randomness probes read its drifting outputs (they said
    "logits changed beyond float rounding" and "draws from a generator of its own" before the error blamed the
    gradient probe), and its buffers are put back: evaluation leaves the model as it found it, also on an error."""
    argv, _ = _setup(tmp_path, monkeypatch, "drifting_gate")
    line = _error(capsys, [*argv, "--factory-kwargs", '{"count_calls": true}'])
    assert "one forward pass in eval mode changed the model's '2.calls'" in line
    assert not [r for r in caplog.records if r.name in ("kwta_robust.randomness", "kwta_robust.runtime")]
    import drifting_gate  # noqa: PLC0415 - written by _setup
    from kwta_robust.config import load_config  # noqa: PLC0415
    from kwta_robust.data import load_dataset  # noqa: PLC0415
    from kwta_robust.evaluate import evaluate  # noqa: PLC0415
    from kwta_robust.snapshot import ModelChangedError  # noqa: PLC0415
    model = drifting_gate.make(count_calls=True)
    with pytest.raises(ModelChangedError, match="one forward pass in eval mode"):
        evaluate(model, load_dataset("mnist5k", "test"), load_config(tmp_path / "c.yaml"), progress=False)
    assert int(model[2].calls) == 0


def test_a_buffer_the_first_forward_creates_is_not_a_change() -> None:
    """A gate that registers a buffer at its first call (lazy initialization) ran before; the check of the first
    forward adopts the new buffer and still compares every buffer that was there."""
    from kwta_robust.model_checks import probe_model  # noqa: PLC0415
    from kwta_robust.snapshot import ModelChangedError  # noqa: PLC0415

    class LazyScale(nn.Module):
        def __init__(self, drift: bool = False) -> None:
            super().__init__()
            self.drift = drift
            self.register_buffer("seen", torch.zeros(()))
            self.register_buffer("scale", None)
            self.register_buffer("duty", torch.empty(0))  # sized at the first call

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.scale is None:
                self.scale = torch.ones(x.shape[1])
                self.duty = torch.zeros(x.shape[1])
            if self.drift:
                self.seen += 1
            return x * self.scale

    model = nn.Sequential(nn.Flatten(), LazyScale(), nn.Linear(16, 10))
    probe_model(model, torch.rand(2, 1, 4, 4), 10, "model")
    assert torch.equal(model[1].scale, torch.ones(16)) and model[1].duty.shape == (16,)
    drifting = nn.Sequential(nn.Flatten(), LazyScale(drift=True), nn.Linear(16, 10))
    with pytest.raises(ModelChangedError, match="changed the model's '1.seen'"):
        probe_model(drifting, torch.rand(2, 1, 4, 4), 10, "model")


class _Structured(nn.Module):
    """A classifier returning its logits inside a structure, as Hugging Face models (an output object with
    ``logits``) and models returning ``(logits, features)`` do."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> object:
        logits = self.fc(x.flatten(1))
        if self.kind == "dict":
            return {"logits": logits, "hidden": x}
        if self.kind == "other-keys":
            return {"scores": logits}
        if self.kind == "attribute":
            return type("Output", (), {"logits": logits})()
        if self.kind == "tuple":
            return (logits, x)
        return logits.sum().item()


@pytest.mark.parametrize(("kind", "advice"), [
    ("dict", "returns out['logits']"), ("other-keys", "returns one of its keys (scores)"),
    ("attribute", "returns out.logits"), ("tuple", "returns out[0]"), ("number", None)])
def test_a_structured_output_is_refused_with_where_its_logits_are(kind: str, advice: str | None) -> None:
    with pytest.raises(DataError) as caught:
        model_num_classes(_Structured(kind), torch.rand(1, 1, 4, 4), "data x")
    line = str(caught.value)
    assert "\n" not in line and "should return logits [N, classes]" in line
    if advice is None:
        assert "wrap the model" not in line
    else:
        assert f"wrap the model in an nn.Module whose forward {advice}" in line


def test_the_advised_wrapper_is_evaluated_and_bpda_acts_on_the_wrapped_models_gate() -> None:
    class WithGate(nn.Module):  # a Hugging Face-style output around a kWTA layer
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), KWTA(k=8), nn.Linear(32, 4))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.body(x)}

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)["logits"]

    torch.manual_seed(0)
    inner = WithGate().eval()
    x = torch.rand(12, 1, 4, 4)
    y = inner(x)["logits"].argmax(1)
    config = {"n_examples": 12, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.05]}],
              "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd",
                                                        "inner_params": {"steps": 3}}}]}
    with pytest.raises(DataError, match=r"returns out\['logits'\]"):
        evaluate_model(inner, config, x, y, threads=1)
    record = evaluate_model(Logits(inner), config, x, y, threads=1)
    assert record.clean.correct == 12
    assert record.results[0].bpda_layers == {"inner.body.2": "native"}
