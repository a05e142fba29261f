"""Session 48's second mutation review of scripts/device-check.sh: what tests/test_device_check.py left unchecked —
each step runs under ``timeout`` with its own limit, its rc and time go to OUT/summary.txt and its log's tail to the
output, every pip install stays off the index (the device machine reaches nothing), every flag is spelled out
(argparse takes a prefix) and the tests step names the GPU-path files. Run without a GPU: python, timeout and
nvidia-smi are stubs on PATH that only note how they were called."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

from benchmarks import bench_kwta_layer, bench_peers
from kwta_robust.cli import build_parser
from test_device_check import ROOT, _commands, _steps


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_every_step_runs_under_its_own_limit_with_its_rc_in_the_summary_and_its_log_tail_shown(tmp_path) -> None:
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    _stub(bin_dir / "py", 'echo "stub python $*"\n')
    _stub(bin_dir / "timeout", f'echo "$1" >> {tmp_path}/limits\nshift\nexec "$@"\n')
    _stub(bin_dir / "nvidia-smi", 'echo "stub gpu"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "py"),
           "SCRATCH": str(tmp_path / "scratch")}
    env.pop("DRY", None)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device-check.sh"), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    steps = _steps()
    assert (tmp_path / "limits").read_text().split() == [str(limit) for _, limit, _ in steps]
    summary = (out / "summary.txt").read_text().splitlines()
    assert summary[0] == "stub gpu"
    lines = [line for line in summary if re.match(r"\w+: rc \d+ in \d+ s \(limit \d+\)$", line)]
    assert [line.split(":")[0] for line in lines] == [name for name, _, _ in steps]
    assert [line.rsplit("(limit ", 1)[1] for line in lines] == [f"{limit})" for _, limit, _ in steps]
    for name, _, _ in steps:
        assert "stub python -m" in (out / f"{name}.log").read_text()
    assert done.stdout.count("stub python -m") >= len(steps)  # each log's tail


def test_every_pip_install_stays_off_the_index_and_the_tests_stop_at_the_first_failure() -> None:
    by_name = {name: _commands(command) for name, _, command in _steps()}
    installs = [c for c in by_name["install"] if c[1:4] == ["-m", "pip", "install"]]
    assert len(installs) == 2 and all("--no-index" in c and "--no-deps" in c for c in installs)
    assert by_name["tests"][0][4] == "-x"  # one device call: a failing GPU test ends the step


def test_every_flag_is_spelled_out_and_the_tests_step_runs_the_gpu_path_files(monkeypatch) -> None:
    init = argparse.ArgumentParser.__init__

    def exact(self, *args, **kwargs) -> None:  # argparse would take "--no-progres" for --no-progress
        init(self, *args, **{**kwargs, "allow_abbrev": False})

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", exact)
    by_name = {name: _commands(command)[0] for name, _, command in _steps()}
    assert build_parser(["quickstart"])[0].parse_args(by_name["quickstart"][3:]).no_progress
    assert bench_peers.parse_args(by_name["peers"][3:]).repeats == 3
    assert bench_kwta_layer.parse_args(by_name["kwta_layer"][3:]).repeats == 5
    assert [t for t in by_name["tests"] if t.startswith("tests/")] == [
        "tests/test_attack_progress.py", "tests/test_simulated_device.py", "tests/test_devices_fuzz.py",
        "tests/test_attack_contract.py", "tests/test_device_audit.py"]
