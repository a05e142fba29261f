"""scripts/device-check.sh, issue 13's prepared GPU run, is checked here without a GPU: every step it would run
parses (the benchmarks' and the CLI's own argument parsers, the test files exist), the steps' time limits fit one
device call, and scripts/device-wheels.sh carries every dependency the device image lacks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from benchmarks import bench_kwta_layer, bench_peers
from kwta_robust.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CALL_S = 600  # the device tool's limit on one command (its README)


def _steps(out: str = "/out") -> list[tuple[str, int, str]]:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device-check.sh"), out], cwd=ROOT, check=True,
                          capture_output=True, text=True, env={**os.environ, "DRY": "1", "PYTHON": "python3"})
    steps = []
    for line in done.stdout.splitlines():
        name, limit, command = line.split("|", 2)
        steps.append((name, int(limit), command))
    return steps


def _commands(command: str) -> list[list[str]]:
    return [shlex.split(part) for part in command.split("&&")]


def test_steps_fit_one_device_call_and_write_under_out():
    steps = _steps("/out")
    assert [name for name, _, _ in steps] == ["install", "tests", "quickstart", "peers", "kwta_layer"]
    assert sum(limit for _, limit, _ in steps) <= DEVICE_CALL_S - 30  # the summary and the tails
    outputs = re.findall(r"(/out/[\w./-]+)", " ".join(command for _, _, command in steps))
    assert outputs and all(path.count("/") <= 3 for path in outputs)  # the device tool returns 2 folders down
    assert len(set(outputs)) + len(steps) + 1 <= 8  # logs, summary and outputs: at most 8 files come back


def test_every_step_parses_with_its_own_parser():
    by_name = {name: _commands(command) for name, _, command in _steps()}
    tests = by_name["tests"][0]
    assert tests[:4] == ["python3", "-m", "pytest", "-q"]
    assert all((ROOT / t).is_file() for t in tests if t.startswith("tests/"))
    quickstart = by_name["quickstart"][0]
    assert quickstart[:3] == ["python3", "-m", "kwta_robust.cli"]
    args = build_parser(["quickstart"])[0].parse_args(quickstart[3:])
    assert args.device == "cuda" and args.no_progress
    peers = bench_peers.parse_args(by_name["peers"][0][3:])
    assert (peers.device, peers.repeats, list(peers.attacks)) == ("cuda", 3, ["pgd", "apgd-ce", "cw"])
    layer = bench_kwta_layer.parse_args(by_name["kwta_layer"][0][3:])
    assert (layer.device, layer.repeats) == ("cuda", 5)


def test_device_picks_the_device():
    steps = subprocess.run(["bash", str(ROOT / "scripts" / "device-check.sh"), "/o"], cwd=ROOT, check=True,
                           capture_output=True, text=True, env={**os.environ, "DRY": "1", "DEVICE": "cuda:1"}).stdout
    assert steps.count("--device cuda:1") == 3 and "--device cuda " not in steps


def _requirement_names() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


@pytest.mark.parametrize("name", sorted(_requirement_names()))
def test_wheels_or_image_cover_every_dependency(name):
    script = (ROOT / "scripts" / "device-wheels.sh").read_text()
    image = re.search(r"image \(Python 3\.12, x86-64\) holds (.+?), but not", script, re.S)
    assert image is not None
    held = {w.strip().lower() for w in re.split(r",|\band\b|#", image.group(1)) if w.strip()}
    downloads = " ".join(line for line in script.splitlines() if line.lstrip().startswith(("pip download", '"')))
    fetched = {m.lower() for m in re.findall(r'"?([A-Za-z][\w-]*)(?:[<>=][^" ]*)?"?', downloads)}
    assert name in held or name in fetched, f"{name}: neither in the device image nor among the wheels"
