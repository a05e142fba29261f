"""studies/README.md, studies/run_study.sh, benchmarks/README.md and the study configs against the code.

* every ``kwta-robust`` command of the study README, and the training flags of its model table, parse with the
  CLI's own parser; the study script, run with a stub in place of ``kwta-robust`` (nothing trains or evaluates),
  issues only commands the parser takes, skips the parts ``PARTS`` leaves out, reuses the checkpoints it finds and
  keeps part 3's sweep in ``runs/sweep3x3`` (not ``runs/study``);
* the study's tables are the committed result files verbatim;
* the study configs are what their comments and the README say: the training recipe and the noise sweep share the
  3x3 sweep's base keys, and ``mode: independent`` is accepted in the part 1 suite;
* the benchmarks take the common flags the benchmarks README lists (``bench_scaleout`` only its three).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bench_fixtures import bench  # noqa: F401 - a fixture
from kwta_robust.cli import build_parser
from kwta_robust.config import EvalConfig
from kwta_robust.results import wilson_interval
from test_readme import command_lines, option_problems, parser_options

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "README.md"
CONFIGS = ROOT / "eval_configs"
SEP = "\x1f"

#: A stand-in for ``kwta-robust``: logs its arguments, touches each ``--out`` file and, for a sweep, the matrices and
#: a plot under ``--out-dir`` (what the script copies afterwards).
STUB = f"""#!/usr/bin/env bash
printf '%s{SEP}' "$@" >> "$STUB_LOG"; printf '\\n' >> "$STUB_LOG"
prev=""
for arg in "$@"; do
  if [ "$prev" = "--out" ]; then mkdir -p "$(dirname "$arg")"; touch "$arg"; fi
  if [ "$prev" = "--out-dir" ] && [ "$1" = "sweep" ]; then mkdir -p "$arg/plots"; touch "$arg/matrices.md" \\
      "$arg/plots/heatmap.png"; fi
  prev=$arg
done
"""


def run_script(tmp_path: Path, parts: str, **env_extra: str) -> tuple[list[list[str]], str]:
    """Run a copy of run_study.sh in ``tmp_path`` (its repository root) with the stub (and ``env_extra`` in its
    environment); the commands it issued and its standard output."""
    (tmp_path / "studies").mkdir(exist_ok=True)
    script = tmp_path / "studies" / "run_study.sh"
    script.write_text((ROOT / "studies" / "run_study.sh").read_text(encoding="utf-8"), encoding="utf-8")
    stub, log = tmp_path / "stub.sh", tmp_path / "stub.log"
    stub.write_text(STUB, encoding="utf-8")
    stub.chmod(0o755)
    log.write_text("", encoding="utf-8")
    env = {**os.environ, "KWTA_ROBUST": str(stub), "PARTS": parts, "STUB_LOG": str(log), **env_extra}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    commands = [line.split(SEP)[:-1] for line in log.read_text(encoding="utf-8").splitlines()]
    return commands, done.stdout


# --- the study README's commands --------------------------------------------------------------------------------

def test_every_command_of_the_study_readme_takes_its_options() -> None:
    found = command_lines(STUDY.read_text(encoding="utf-8"), "studies/README.md")
    assert {line.command for line in found} >= {"train", "compare", "table", "sweep"}
    assert option_problems(found, parser_options()) == []


def test_the_model_tables_training_flags_parse() -> None:
    """Each row of part 1's model table, after the shared ``train --config ... --threads 1``."""
    parser, _ = build_parser(["train"])
    text = STUDY.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| relu") or line.startswith("| kwta0.")]
    flags = [span for row in rows[:4] for span in row.split("`")[1::2]]
    assert len(flags) == 5  # relu; kwta (two spans); relu-at; kwta0.1-at
    for span in (" ".join(flags[1:3]), flags[0], flags[3], flags[4]):
        args = parser.parse_args(["train", "--config", "eval_configs/study_train_cnn.yaml", "--threads", "1",
                                  *span.replace(" ...", "").split()])
        assert args.out.startswith("runs/study/models/")
        assert (args.method, args.eps) in ((None, None), ("pgd", "0.3"))


# --- the study script -------------------------------------------------------------------------------------------

def test_the_script_issues_only_commands_the_cli_takes_and_parts_1_2_skip_the_sweep(tmp_path: Path) -> None:
    parser, _ = build_parser()
    commands, _ = run_script(tmp_path, "1 2")
    for argv in commands:
        parser.parse_args(argv)  # a bad option exits with status 2
    assert [c[0] for c in commands].count("train") == 6
    assert ["sweep", "eval_configs/study_noise_sweep.yaml", "--out-dir", "runs/study/noise", "--workers", "1",
            "--no-progress"] in commands
    assert not any("eval_configs/sweep_mnist5k_3x3.yaml" in c for c in commands)
    at = [c for c in commands if c[0] == "train" and "--method" in c]
    assert [c[c.index("--out") + 1] for c in at] == ["runs/study/models/relu-at.pt", "runs/study/models/kwta0.1-at.pt"]
    assert all(c[c.index("--eps") + 1] == "0.3" and c[c.index("--pgd-steps") + 1] == "5" for c in at)
    assert (tmp_path / "studies" / "results" / "part1.csv").is_file()


def test_the_script_reuses_checkpoints_and_keeps_part_3_outside_runs_study(tmp_path: Path) -> None:
    run_script(tmp_path, "1")
    again, out = run_script(tmp_path, "1 3")
    assert not [c for c in again if c[0] == "train"]  # every checkpoint is there: none is trained again
    assert out.count("reusing runs/study/models/") == 6
    sweep = [c for c in again if c[0] == "sweep"]
    assert sweep == [["sweep", "eval_configs/sweep_mnist5k_3x3.yaml", "--out-dir", "runs/sweep3x3", "--no-progress"]]
    assert (tmp_path / "studies" / "results" / "part3_matrices.md").is_file()
    assert (tmp_path / "studies" / "results" / "part3_plots" / "heatmap.png").is_file()
    assert (tmp_path / "runs" / "sweep3x3" / "matrices.md").is_file()  # rm -rf runs/study leaves it


def test_the_script_writes_where_study_out_sweep3_out_and_results_say(tmp_path: Path) -> None:
    """A re-run into a scratch folder (the README's STUDY_OUT / STUDY_SWEEP3_OUT / STUDY_RESULTS) leaves the
    committed results and runs/ alone."""
    scratch = tmp_path / "scratch"
    commands, _ = run_script(tmp_path, "1 2 3", STUDY_OUT=str(scratch / "study"),
                             STUDY_SWEEP3_OUT=str(scratch / "sweep3x3"), STUDY_RESULTS=str(scratch / "results"))
    trained = [c[c.index("--out") + 1] for c in commands if c[0] == "train"]
    assert trained[0] == str(scratch / "study" / "models" / "relu.pt") and len(trained) == 6
    sweeps = [c[c.index("--out-dir") + 1] for c in commands if c[0] == "sweep"]
    assert sweeps == [str(scratch / "study" / "noise"), str(scratch / "sweep3x3")]
    assert sorted(p.name for p in (scratch / "results").iterdir()) == [
        "part1.csv", "part1_adversarial.md", "part1_long.md", "part1_standard.md", "part2_noise_long.md",
        "part2_noise_matrices.md", "part2_noise_wide.md", "part2_plots", "part3_matrices.md", "part3_plots"]
    assert not (tmp_path / "studies" / "results").exists() and not (tmp_path / "runs").exists()


# --- the study's tables are the committed results ---------------------------------------------------------------

def test_the_readmes_tables_are_the_committed_result_files() -> None:
    results = ROOT / "studies" / "results"
    lines = {line for path in results.glob("*.md") for line in path.read_text(encoding="utf-8").splitlines()}
    text = STUDY.read_text(encoding="utf-8")
    quoted = [line for line in text.splitlines()
              if (line.startswith("| ") and " (" in line and "`" not in line) or line.startswith("- noise numenta")
              or line.startswith("- [") or line.startswith("### mnist5k-3x3")]
    assert len(quoted) > 40
    assert [line for line in quoted if line not in lines] == []


def half_width(correct: int, n: int) -> float:
    low, high = wilson_interval(correct, n)
    return 100 * (high - low) / 2


def test_the_intervals_are_at_most_7_points_at_200_images_and_4_4_at_500() -> None:
    """The Limits section's interval widths: widest at 50% (hand-worked: 6.86 and 4.37 points)."""
    assert max(range(201), key=lambda k: half_width(k, 200)) == 100
    assert round(half_width(100, 200), 2) == 6.86 and round(half_width(250, 500), 2) == 4.37
    assert half_width(187, 200) < 4  # 93.5%: narrower near 100%


# --- the study configs --------------------------------------------------------------------------------------------

def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


def test_the_study_recipes_are_the_3x3_sweeps_base_keys() -> None:
    sweep = load("sweep_mnist5k_3x3.yaml")
    noise = load("study_noise_sweep.yaml")
    assert noise["train"] == sweep["train"] and noise["pruning"] == sweep["pruning"]
    recipe = load("study_train_cnn.yaml")
    assert {k: v for k, v in recipe.items() if k not in ("activation", "method")} == \
        {k: v for k, v in sweep["train"].items() if k != "activation"}
    assert recipe["activation"]["mode"] == sweep["train"]["activation"]["mode"] == "volume"
    assert recipe["method"] == "standard"


def test_the_part_1_suite_runs_in_independent_mode_too() -> None:
    data = load("study_xiao_tramer.yaml")
    assert EvalConfig.from_dict(data).mode == "cascade"
    assert EvalConfig.from_dict({**data, "mode": "independent"}).mode == "independent"


# --- the benchmarks' common flags ---------------------------------------------------------------------------------

#: The option a benchmark cannot run without (a file it reads), if any.
REQUIRED = {"strength_checks": "--from", "strength_variants": "--variants"}
COMMON = {"device": "cpu", "repeats": None, "threads": None, "clock": "wall", "seed": 0, "quick": True, "out": None}


@pytest.mark.parametrize("name", ["bench_kwta_layer", "bench_harness_overhead", "bench_record_scale",
                                  "bench_cascade", "bench_gradient_estimation", "bench_strength",
                                  "strength_checks", "strength_variants", "bench_memory", "bench_peers"])
def test_every_benchmark_but_scaleout_takes_the_common_flags(bench, name: str, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in.json").write_text("{}", encoding="utf-8")
    required = [REQUIRED[name], str(tmp_path / "in.json")] if name in REQUIRED else []
    args = vars(bench[name].parse_args(["--quick", *required]))
    assert {k: args[k] for k in COMMON if k != "repeats"} == {k: v for k, v in COMMON.items() if k != "repeats"}
    assert isinstance(args["repeats"], int) and args["repeats"] >= 1
    chosen = vars(bench[name].parse_args(["--device", "cuda", "--clock", "cpu", "--threads", "1", "--out", "x.md",
                                          *required]))
    assert (chosen["device"], chosen["clock"], chosen["threads"], chosen["out"]) == ("cuda", "cpu", 1, "x.md")


def test_the_scaleout_benchmark_takes_only_repeats_quick_and_out_of_them(bench) -> None:  # noqa: F811
    args = vars(bench["bench_scaleout"].parse_args(["--repeats", "3", "--out", "x.md"]))
    assert (args["quick"], args["repeats"], args["out"]) == (False, 3, "x.md")
    assert vars(bench["bench_scaleout"].parse_args(["--quick"]))["quick"] is True
    assert not {"device", "threads", "clock", "seed"} & set(args)
