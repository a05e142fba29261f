"""What the README's "Performance" section promises about the mechanisms behind its numbers: the benchmarks refuse a
device they do not run on in one ``error:`` line, the quickstart retrains a checkpoint trained with another thread
count, pool workers get the driver's thread count whatever the cores, and the channels-last layout converts
plain ``nn.Conv2d`` weights only and checks them on 32 clean inputs."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import kwta_robust.evaluate as evaluate_module
from bench_fixtures import ROOT, bench  # noqa: F401 - a fixture
from kwta_robust import quickstart
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.quickstart import ensure_trained
from kwta_robust.runtime import channels_last_convolutions
from kwta_robust.sweep.executors import pool
from test_runtime import Net, restore_threads  # noqa: F401 - a fixture
from test_train import tiny_config


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_a_benchmark_refuses_a_device_other_than_cpu_and_cuda_in_one_line(bench, device: str) -> None:
    """``--device mps`` reached the benchmark's first tensor and ended in a RuntimeError traceback."""
    common = bench["_common"]
    parser = argparse.ArgumentParser()
    common.add_common_arguments(parser, repeats=1)
    with pytest.raises(SystemExit) as raised:
        common.setup(parser.parse_args(["--device", device]))
    assert str(raised.value) == (f"error: --device: {device!r} is not supported (the benchmarks run on cpu and "
                                 "cuda); use cpu, cuda or cuda:N")


def test_the_benchmark_command_prints_that_line_and_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_kwta_layer", "--quick", "--device", "mps"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: --device: 'mps' is not supported (the benchmarks run on cpu and cuda); "
                                        "use cpu, cuda or cuda:N"]


def test_quickstart_retrains_a_checkpoint_trained_with_another_thread_count(tmp_path: Path, caplog, monkeypatch,
                                                                            restore_threads) -> None:
    out = str(tmp_path / "kwta.pt")
    path, trained = ensure_trained(tiny_config(tmp_path, out=out, threads=1))
    assert trained and load_checkpoint(path).metadata["torch_threads"] == 1
    assert ensure_trained(tiny_config(tmp_path, out=out, threads=1)) == (path, False)  # same recipe: reused
    asked: list[int] = []  # a second training run is what is checked, not run: it would take as long as the first
    monkeypatch.setattr(quickstart, "run_training",
                        lambda cfg: asked.append(cfg.threads) or SimpleNamespace(checkpoint=cfg.out, test_accuracy=0.5))
    with caplog.at_level(logging.INFO, logger="kwta_robust.quickstart"):
        assert ensure_trained(tiny_config(tmp_path, out=out, threads=2)) == (path, True)
    assert asked == [2] and any("its training settings differ" in r.getMessage() for r in caplog.records)


class _Pool:
    """Stands in for ``concurrent.futures.ProcessPoolExecutor``: keeps the worker initializer's arguments."""

    seen: list[tuple] = []

    def __init__(self, max_workers: int, mp_context, initializer, initargs) -> None:
        _Pool.seen.append((max_workers, initargs[0]))


# the driver's count in every worker, whatever the cores (a cap would move the numbers); a warning where the workers'
# threads exceed the cores: (8, 4, 4) ran 2 threads per worker before, (2, 1, 3) is 1 thread and no warning
@pytest.mark.parametrize(("cores", "threads", "workers", "warned"), [(8, 3, 2, False), (8, 4, 4, True),
                                                                     (2, 1, 3, False), (8, 1, 2, False)])
def test_pool_workers_get_the_drivers_threads_whatever_the_cores(
        monkeypatch, restore_threads, caplog, cores: int, threads: int, workers: int, warned: bool) -> None:
    monkeypatch.setattr(pool, "cpu_count", lambda: cores)
    monkeypatch.setattr(pool.cf, "ProcessPoolExecutor", _Pool)
    _Pool.seen = []
    torch.set_num_threads(threads)
    with caplog.at_level(logging.WARNING, logger=pool.__name__):
        pool.PoolExecutor(workers)._start(workers)
    assert _Pool.seen == [(workers, threads)]
    expected = [f"{workers} pool workers x {threads} torch threads exceed this machine's {cores} cores: slower, same "
                "numbers (lower --threads or the worker count)"] if warned else []
    assert [r.getMessage() for r in caplog.records if r.name == pool.__name__] == expected


class _SubConv(nn.Conv2d):
    """A subclass of ``nn.Conv2d`` (it might view its weight): left in its layout."""


def test_only_plain_conv2d_weights_go_channels_last() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), _SubConv(4, 4, 3))
    with channels_last_convolutions([model]) as converted:
        assert converted == 1
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert model[1].weight.is_contiguous() and not model[1].weight.is_contiguous(memory_format=torch.channels_last)


def test_the_layout_is_checked_on_32_clean_inputs(monkeypatch) -> None:
    model = Net().eval()
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    probed: list[int] = []
    original = evaluate_module.evaluation_layout

    def watched(models, layout, device, probe):
        probed.extend(logits.shape[0] for logits in probe())
        return original(models, layout, device, probe)

    monkeypatch.setattr(evaluate_module, "evaluation_layout", watched)
    cfg = EvalConfig.from_dict({"dataset": "toy", "n_examples": 40, "threats": [{"norm": "linf", "epsilons": [0.05]}],
                                "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False}})
    record = evaluate_module.evaluate(model, TensorData(x, y, "toy", 3, torch.arange(40)), cfg, resume=False,
                                      progress=False)
    assert probed == [32] and record.provenance["layout"] == "channels_last"
