"""Bad inputs, table-driven per sub-command: each must exit 2 with exactly one `error:` line naming the problem,
never a traceback, and before any work (training is replaced by a function that fails the test)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from torch import nn

import kwta_robust.sweep.cells as sweep_cells
import kwta_robust.training.run as train_module
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.models import ModelSpec

torch.set_num_threads(1)

EVAL = {"description": "bad inputs", "dataset": "mnist5k", "n_examples": 6, "batch_size": 6, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"enabled": False}}
TRAIN = {"dataset": "digits", "arch": "mlp", "arch_kwargs": {"hidden": [8]}, "epochs": 0, "device": "cpu"}
SWEEP = {"name": "tiny", "train": TRAIN, "grid": {"kwta_ratios": [1.0], "weight_sparsities": [0.0]},
         "eval": {**EVAL, "dataset": "digits"}}


# --- bring-your-own factories used through --model-factory test_bad_inputs:<name> ------------------------------
def factory_raises() -> nn.Module:
    raise RuntimeError("factory exploded")


def factory_extra_dim() -> nn.Module:
    class ExtraDim(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).unsqueeze(-1)

    return ExtraDim()


def factory_tuple() -> nn.Module:
    class Pair(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10], 0

    return Pair()


def factory_dict() -> nn.Module:
    class Output(nn.Module):  # a Hugging Face-style output
        def forward(self, x):
            return {"logits": x.flatten(1)[:, :10], "hidden_states": x}

    return Output()


def factory_number() -> nn.Module:
    class Number(nn.Module):
        def forward(self, x):
            return float(x.sum())

    return Number()


def factory_cifar() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def factory_batch_statistics() -> nn.Module:  # runs on a batch, not on one sample: attacks end on one sample
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8, track_running_stats=False),
                         nn.Linear(8, 10))


# --- files ---------------------------------------------------------------------------------------------------
def _ckpt(path: Path, meta: dict | None = None, mutate: Callable[[nn.Module], None] | None = None, **spec_args) -> str:
    args = {"activation": "relu", "num_classes": 10, "in_channels": 1, "input_size": 28, "hidden": [16], **spec_args}
    spec = ModelSpec.from_args("mlp", **args)
    torch.manual_seed(0)
    model = spec.build()
    if mutate is not None:
        mutate(model)
    return str(save_checkpoint(path, model, spec, {"dataset": "mnist5k", "data_split_seed": 0, **(meta or {})}))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    f: dict[str, str] = {"dir": str(d)}
    f["ckpt"] = _ckpt(d / "relu.pt")
    f["ckpt2"] = _ckpt(d / "kwta.pt", activation={"name": "kwta", "ratio": 0.25})
    f["digits_ckpt"] = _ckpt(d / "digits.pt", {"dataset": "digits"}, input_size=8)
    f["three"] = _ckpt(d / "three.pt", num_classes=3)
    f["nan"] = _ckpt(d / "nan.pt", mutate=lambda m: m.net[1].weight.data.fill_(float("nan")))
    f["kbig"] = _ckpt(d / "kbig.pt", activation={"name": "kwta", "k": 1000})
    f["split3"] = _ckpt(d / "split3.pt", {"data_split_seed": 3})  # trained on another mnist5k train/test split
    payload = torch.load(f["ckpt"], weights_only=True)
    payload["model_spec"]["kwargs"]["hidden"] = [10**7, 10**7]
    torch.save(payload, d / "absurd.pt")
    f["absurd"] = str(d / "absurd.pt")
    (d / "random.pt").write_bytes(random.Random(0).randbytes(2048))
    f["random"] = str(d / "random.pt")
    (d / "afile").write_text("x")
    f["afile"] = str(d / "afile")
    (d / "folder").mkdir()
    f["folder"] = str(d / "folder")
    for parts in (d / "sharded.json.parts", d / "cmp-sharded" / "relu.json.parts"):  # an interrupted --shards run
        parts.mkdir(parents=True)
        (parts / "layer-probe.json").write_text("{}")
    f["cfg"] = str(d / "c.yaml")
    Path(f["cfg"]).write_text(yaml.safe_dump(EVAL))
    f["train"] = str(d / "t.yaml")
    Path(f["train"]).write_text(yaml.safe_dump(TRAIN))
    f["record"] = str(d / "rec.json")
    assert main(["-q", "evaluate", f["ckpt"], "--config", f["cfg"], "--out", f["record"], "--no-progress"]) == 0
    return f


def write(files: dict, name: str, data: object) -> str:
    path = Path(files["dir"]) / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return str(path)


def record_with(files: dict, name: str, change: Callable[[dict], object]) -> str:
    data = json.loads(Path(files["record"]).read_text())
    change(data)
    return write(files, f"{name}.json", data)


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad input must be refused before any training starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started despite a bad input")

    monkeypatch.setattr(sweep_cells, "run_training", refuse)
    monkeypatch.setattr(train_module, "train_model", refuse)  # the loop itself: `train` checks its model first


def one_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    rc = main(argv)
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1, err
    return lines[0]


def evaluate(f: dict, ckpt: str | None = None, *extra: str, config: str | None = None) -> list[str]:
    return ["evaluate", *([ckpt] if ckpt else []), "--config", config or f["cfg"], "--no-progress", *extra]


# (id, argv from the files, text the error line must hold)
EVALUATE: list[tuple[str, Callable[[dict], list[str]], str]] = [
    ("random-bytes-checkpoint", lambda f: evaluate(f, f["random"]), "corrupt or not a checkpoint"),
    ("config-is-a-checkpoint", lambda f: evaluate(f, f["ckpt"], config=f["ckpt"]), "is not UTF-8 text"),
    ("config-is-a-folder", lambda f: evaluate(f, f["ckpt"], config=f["folder"]), "is a folder"),
    ("model-of-another-data-set", lambda f: evaluate(f, f["digits_ckpt"]),
     "cannot run on mnist5k inputs [N, 1, 28, 28] (it expects inputs [N, 1, 8, 8], was trained on digits)"),
    ("wrong-number-of-classes", lambda f: evaluate(f, f["three"]), "has 3 outputs but mnist5k has 10 classes"),
    ("nan-weights", lambda f: evaluate(f, f["nan"]), "'net.1.weight' holds 12544 NaN or infinite value(s)"),
    ("k-larger-than-layer", lambda f: evaluate(f, f["kbig"]), "k=1000 exceeds the 16 units of kWTA layer 'net.2'"),
    ("absurd-model-spec", lambda f: evaluate(f, f["absurd"]), "would have 100,007,960,000,010 parameters"),
    ("factory-raises", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_raises"),
     "raised RuntimeError: factory exploded"),
    ("factory-wrong-output-shape", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_extra_dim"),
     "returns shape [2, 10, 1] for 2 inputs"),
    ("factory-returns-tuple", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_tuple"),
     "returns tuple, expected a logits tensor [N, 10]; wrap the model in an nn.Module whose forward returns out[0]"),
    ("factory-returns-dict", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_dict"),
     "returns dict, expected a logits tensor [N, 10]; wrap the model in an nn.Module whose forward returns "
     "out['logits']"),
    ("factory-returns-a-number", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_number"),
     "returns float, expected a logits tensor [N, 10]; make forward() return the logits only"),
    ("factory-wrong-input-shape", lambda f: evaluate(f, None, "--model-factory", "test_bad_inputs:factory_cifar"),
     "cannot run on mnist5k inputs [N, 1, 28, 28]"),
    ("factory-needs-a-batch", lambda f: evaluate(f, None, "--model-factory",
                                                 "test_bad_inputs:factory_batch_statistics"),
     "batch norm '2' normalizes with batch statistics in eval mode (track_running_stats=False), and attacks go on"),
    ("unmerged-shard-parts", lambda f: evaluate(f, f["ckpt"], "--out", f["dir"] + "/sharded.json"),
     "sharded.json.parts holds the finished parts of an interrupted sharded run; re-run with --shards N (the same N) "
     "to resume them, or with --no-resume to start over without them"),  # redid their work beside them
    ("seed-negative", lambda f: evaluate(f, f["ckpt"], "--seed", "-1"), "seed: must be >= 0"),
    ("factory-kwargs-with-a-checkpoint", lambda f: evaluate(f, f["ckpt"], "--factory-kwargs", '{"hidden": 3}'),
     "--factory-kwargs: only used with --model-factory"),  # was silently ignored
    ("out-is-a-folder", lambda f: evaluate(f, f["ckpt"], "--out", f["folder"]), "is a folder"),
    ("out-inside-a-file", lambda f: evaluate(f, f["ckpt"], "--out", f["afile"] + "/r.json"), "is a file, not a folder"),
    ("out-empty", lambda f: evaluate(f, f["ckpt"], "--out", ""), "--out: empty path"),
    ("out-is-the-checkpoint", lambda f: evaluate(f, f["ckpt"], "--out", f["ckpt"]), "also given as CHECKPOINT"),
    ("adversarial-inside-a-file", lambda f: evaluate(f, f["ckpt"], "--save-adversarial", f["afile"] + "/a.pt"),
     "--save-adversarial: "),
    ("adversarial-same-as-out", lambda f: evaluate(f, f["ckpt"], "--out", "x.json", "--save-adversarial", "x.json"),
     "--save-adversarial: x.json is also given as --out"),
]

COMPARE = [
    ("labels-dotdot", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--labels", "../x,y"],
     "--labels: '../x' contains a path separator"),
    ("labels-absolute", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--labels", "/tmp/x,y"],
     "contains a path separator"),
    ("labels-dot-dot-only", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--labels", "..,y"],
     "'..' is not usable as a file name"),
    ("labels-control-character", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--labels",
                                            "a\x01b,y"], "control character"),
    ("labels-repeated", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--labels", "a,a"],
     "--labels: 'a' is given twice; give each model its own name"),
    ("out-dir-is-a-file", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--out-dir", f["afile"]],
     "--out-dir: "),
    ("unmerged-shard-parts", lambda f: ["compare", f["ckpt"], f["ckpt2"], "--config", f["cfg"], "--no-progress",
                                        "--out-dir", f["dir"] + "/cmp-sharded"], "relu.json.parts holds the finished "
     "parts of an interrupted sharded run"),
    ("nan-second-model", lambda f: ["compare", f["ckpt"], f["nan"], "--config", f["cfg"], "--no-progress",
                                    "--out-dir", f["dir"] + "/cmp"], "holds 12544 NaN"),
    ("other-data-split", lambda f: ["compare", f["ckpt"], f["split3"], "--config", f["cfg"], "--no-progress",
                                    "--out-dir", f["dir"] + "/cmp-split"], "compare: the models were trained on "
     "different data splits (data_split_seed [0, 3]); they cannot be evaluated on the same held-out samples"),
]


def _set(path: list, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


TABLE = [
    ("partial-record", lambda f: ["table", record_with(f, "partial", _set(["status"], "partial"))],
     "partial record (its evaluation did not finish)"),
    ("unknown-status", lambda f: ["table", record_with(f, "status", _set(["status"], "great"))], "status 'great'"),
    ("accuracy-contradicts-counts", lambda f: ["table", record_with(f, "acc", _set(["results", 0, "robust",
                                                                                   "accuracy"], 0.99))],
     "accuracy 0.99 contradicts its counts"),
    ("flag-value-5", lambda f: ["table", record_with(f, "flag", _set(["results", 0, "flags", 0], 5))],
     "value 5 is not one of -1, 0, 1"),
    ("flags-too-short", lambda f: ["table", record_with(f, "short", _set(["results", 0, "flags"], [1]))],
     "1 entries for 6 samples"),
    ("clean-flags-vs-counts", lambda f: ["table", record_with(f, "clean", _set(["clean_flags"], [1] * 6))],
     "clean_flags count 6"),
    ("results-not-a-list", lambda f: ["table", record_with(f, "dict", _set(["results"], {}))],
     "'results' must be a list"),
    ("schema-version", lambda f: ["table", record_with(f, "schema", _set(["schema_version"], 9))],
     "; it was written by a newer kwta-robust: upgrade to read it"),
    ("schema-version-text", lambda f: ["table", record_with(f, "schema-text", _set(["schema_version"], "x"))],
     "schema_version 'x' is not supported (this version reads"),
    ("model-not-a-mapping", lambda f: ["table", record_with(f, "model", _set(["model"], [1, 2]))],
     "record field 'model' must be a JSON object, got list"),
    ("unknown-mode", lambda f: ["table", record_with(f, "mode", _set(["mode"], "x"))], "mode 'x' is not one of"),
    ("clean-n-negative", lambda f: ["table", record_with(f, "n", _set(["clean", "n"], -1))],
     "clean.n must be an integer >= 0, got -1"),
    ("result-counts-other-n", lambda f: ["table", record_with(f, "rn", _set(["results", 0, "robust", "n"], 5))],
     "counts 5 samples, the record has 6"),
    ("result-correct-outside", lambda f: ["table", record_with(f, "rc", _set(["results", 0, "robust", "correct"], 7))],
     "correct = 7 is outside [0, 6]"),
    ("flags-not-integers", lambda f: ["table", record_with(f, "fl", _set(["results", 0, "flags"], ["a"] * 6))],
     "flags: expected a list of integers"),
    ("unknown-norm", lambda f: ["table", record_with(f, "norm", _set(["results", 0, "norm"], "l3"))],
     "unknown norm 'l3'"),
    ("indices-wrong-length", lambda f: ["table", record_with(f, "idx", _set(["dataset", "indices"], [0]))],
     "dataset.indices must list the 6 evaluated samples"),
    ("folder-as-record", lambda f: ["table", f["folder"]], "is a folder"),
    ("out-is-a-folder", lambda f: ["table", f["record"], "--out", f["folder"]], "--out: "),
    ("out-inside-a-file", lambda f: ["table", f["record"], "--out", f["afile"] + "/t.md"], "is a file, not a folder"),
    ("out-overwrites-a-record", lambda f: ["table", f["record"], "--out", f["record"]], "also given as RECORD"),
]

TRAIN_CASES = [
    ("config-is-a-checkpoint", lambda f: ["train", "--config", f["ckpt"]], "is not UTF-8 text"),
    ("out-is-a-folder", lambda f: ["train", "--config", f["train"], "--out", f["folder"]], "--out: "),
    ("out-inside-a-file", lambda f: ["train", "--config", f["train"], "--out", f["afile"] + "/m.pt"],
     "is a file, not a folder"),
    ("out-is-the-config", lambda f: ["train", "--config", f["train"], "--out", f["train"]], "also given as --config"),
    ("k-larger-than-layer", lambda f: ["train", "--config", f["train"], "--out", f["dir"] + "/k.pt", "--activation",
                                       "kwta", "--k", "100000"], "k=100000 exceeds the 8 units of kWTA layer"),
    ("k-zero", lambda f: ["train", "--config", f["train"], "--activation", "kwta", "--k", "0"],
     "error: --k: must be"),  # a flag's value: the flag
    ("pgd-eps-above-1-linf", lambda f: ["train", "--config", f["train"], "--method", "pgd", "--eps", "1.5"],
     "error: --eps: linf epsilon 1.5 exceeds 1"),
    ("seed-negative", lambda f: ["train", "--config", f["train"], "--seed", "-1"], "seed: must be >= 0"),
    ("lr-infinite", lambda f: ["train", "--config", f["train"], "--lr", "inf"],
     "lr: expected a finite number, got inf"),
    ("arch-arg-not-a-list", lambda f: ["train", "--config", f["train"], "--out", f["dir"] + "/c.pt", "--arch", "cnn",
                                       "--arch-arg", "hidden=8", "--arch-arg", "channels=abc"],
     "arch 'cnn': argument 'channels' expects Sequence[int], got 'abc' (str); pass a value of that type"),
    ("arch-arg-absurd-size", lambda f: ["train", "--config", f["train"], "--out", f["dir"] + "/a.pt", "--arch-arg",
                                        "hidden=[10000000,10000000]"], "would have 100,000,760,000,010 parameters"),
]

SWEEP_CASES = [
    ("name-absolute", lambda f: ["sweep", write(f, "s1.yaml", {**SWEEP, "name": "/tmp/x"})], "name: '/tmp/x'"),
    ("name-dotdot", lambda f: ["sweep", write(f, "s2.yaml", {**SWEEP, "name": "../../x"})], "name: '../../x'"),
    ("name-dot-dot-only", lambda f: ["sweep", write(f, "s3.yaml", {**SWEEP, "name": ".."})], "not usable"),
    ("config-is-a-checkpoint", lambda f: ["sweep", f["ckpt"]], "is not UTF-8 text"),
    ("out-dir-is-a-file", lambda f: ["sweep", write(f, "s4.yaml", SWEEP), "--out-dir", f["afile"]],
     "--out-dir: "),
    ("absurd-architecture", lambda f: ["sweep", write(f, "s5.yaml", {**SWEEP, "train": {
        **TRAIN, "arch_kwargs": {"hidden": [10**7, 10**7]}}}), "--out-dir", f["dir"] + "/sw"],
     "would have 100,000,760,000,010 parameters"),
    ("bad-architecture-argument", lambda f: ["sweep", write(f, "s6.yaml", {**SWEEP, "train": {
        **TRAIN, "arch_kwargs": {"hidden": "abc"}}}), "--out-dir", f["dir"] + "/sw"],
     "train.arch_kwargs: arch 'mlp': argument 'hidden' expects Sequence[int], got 'abc' (str)"),
    ("more-examples-than-the-split", lambda f: ["sweep", write(f, "s7.yaml", {**SWEEP, "eval": {
        **SWEEP["eval"], "n_examples": 100000}}), "--out-dir", f["dir"] + "/sw"], "n_examples: 100000 requested"),
]

QUICKSTART = [
    ("suite-on-another-data-set", lambda f: ["quickstart", "--out-dir", f["dir"] + "/qs", "--config",
                                             write(f, "q1.yaml", {**EVAL, "dataset": "digits"})],
     "quickstart trains its models on mnist5k"),
    ("more-examples-than-the-split", lambda f: ["quickstart", "--out-dir", f["dir"] + "/qs", "--config",
                                                write(f, "q2.yaml", {**EVAL, "n_examples": 5000})],
     "n_examples: 5000 requested"),
    ("out-dir-is-a-file", lambda f: ["quickstart", "--out-dir", f["afile"], "--config", f["cfg"]], "--out-dir: "),
    ("config-is-a-checkpoint", lambda f: ["quickstart", "--config", f["ckpt"]], "is not UTF-8 text"),
]

CASES = [(f"{command}/{name}", build, text) for command, table in (
    ("evaluate", EVALUATE), ("compare", COMPARE), ("table", TABLE), ("train", TRAIN_CASES), ("sweep", SWEEP_CASES),
    ("quickstart", QUICKSTART)) for name, build, text in table]


@pytest.mark.parametrize("build,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(build, text, files, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error(capsys, build(files))
    assert line.startswith("error: ") and text in line, line
    assert "--allow-pickle" not in line  # only a well-formed file that needs pickle may suggest it


def test_every_sub_command_has_bad_input_cases() -> None:
    commands = {case_id.split("/")[0] for case_id, _, _ in CASES}
    assert commands == {"evaluate", "compare", "table", "train", "sweep", "quickstart"}


@pytest.mark.parametrize("argv, text", [
    (["evaluate", "m.pt", "--config", "c.yaml", "--threads", "many"],
     "error: argument --threads: invalid int value: 'many'; see kwta-robust evaluate --help"),
    (["evaluate", "m.pt"], "error: the following arguments are required: --config; see kwta-robust evaluate --help"),
    (["table", "r.json", "--format", "xml"], "error: argument --format: invalid choice: 'xml'"),
    (["bogus"], "error: argument COMMAND: invalid choice: 'bogus'"),
    (["table", "r.json", "--matrx"], "error: unrecognized arguments: --matrx; see kwta-robust table --help"),
])
def test_an_option_argparse_refuses_is_one_error_line(argv, text, capsys) -> None:
    """Before: argparse's usage block (a dozen lines) and then `kwta-robust evaluate: error: ...`."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith(text), err


def test_json_nested_too_deeply_is_one_error_line(files, capsys, tmp_path) -> None:
    """A record, an --out file or --factory-kwargs of 100,000 nested lists: before, a raw RecursionError traceback
    from json's decoder (table, report, evaluate --out), now one line each (--out: not a record, never overwritten)."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    for argv, text in ((["table", str(tmp_path / "deep.json")], "is not a record (JSON nested too deeply to read)"),
                       (["report", str(tmp_path / "deep.json"), "--out", str(tmp_path / "r.html")],
                        "nested too deeply"),
                       (evaluate(files, files["ckpt"], "--out", str(tmp_path / "deep.json")),
                        "is not a kwta-robust record"),
                       (evaluate(files, None, "--model-factory", "test_bad_inputs:factory_cifar", "--factory-kwargs",
                                 deep), "--factory-kwargs: not valid JSON")):
        assert text in one_error(capsys, argv)
    assert (tmp_path / "deep.json").read_text() == deep


def test_no_resume_starts_over_beside_an_interrupted_sharded_runs_parts(files, capsys, tmp_path) -> None:
    parts = tmp_path / "r.json.parts"
    parts.mkdir()
    (parts / "layer-probe.json").write_text("{}")
    assert main(evaluate(files, files["ckpt"], "--out", str(tmp_path / "r.json"), "--no-resume")) == 0
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "complete"
    # the run started over without them: kept, they made every later run refuse the complete record as unmerged
    assert not parts.exists()
