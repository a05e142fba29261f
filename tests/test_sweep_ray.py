"""The ``ray`` executor on a real local Ray (``ray.init(num_cpus=2)``, started once for this module): the same
matrices as the in-line executor, resources and threads per task, cancellation, a worker killed in the middle of a
cell (Ray reruns it) and a killed driver (the re-run redoes no finished cell); the one-line errors of its options
and of a missing Ray. CI installs the extra (``pip install -e ".[test,ray]"``): nothing here is skipped."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# the test cluster listens on the loopback only (read when ray is imported; the driver subprocess inherits it)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray import cloudpickle  # noqa: E402

from kwta_robust.cli import main  # noqa: E402
from kwta_robust.errors import ConfigError  # noqa: E402
from kwta_robust.results import load_record  # noqa: E402
from kwta_robust.sweep import Resources, SweepConfig, create_executor, plan_cells, run_sweep  # noqa: E402
from kwta_robust.sweep.executors.ray import RayExecutor  # noqa: E402
from test_shards import comparable  # noqa: E402
from test_sweep import numbers, tiny_config, write_config  # noqa: E402

torch.set_num_threads(1)  # the in-line reference: one thread, as every Ray task reserving one core
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hooks below run inside Ray workers

REPO = Path(__file__).resolve().parents[1]
TWO_CELLS = {"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0], "pruning_methods": ["magnitude"]}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module's tests: its address (``HOST:PORT``)."""
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
                       object_store_memory=100 * 2**20)
    warm = [import_in_worker.remote() for _ in range(2)]  # two workers import torch while the in-line run goes
    yield context.address_info["gcs_address"]
    ray.get(warm)
    ray.shutdown()


@pytest.fixture(scope="module")
def inline_sweep(tmp_path_factory) -> Path:
    """The tiny sweep (ReLU twin and kWTA k/N 0.25, dense) run in-line: its folder."""
    out = tmp_path_factory.mktemp("inline")
    result = run_sweep(SweepConfig.from_dict(tiny_config(grid=TWO_CELLS)), out, progress=False)
    assert result.failed == [] and len(result.records()) == 2
    return out


@pytest.fixture(scope="module")
def inline_reference(inline_sweep) -> dict:
    """What every Ray run must reproduce, cell by cell: the numbers of the in-line sweep's records."""
    return cell_numbers(load_record(p) for p in inline_sweep.glob("cells/*/eval-*.json"))


def cell_numbers(records) -> dict:
    return {r.model["sweep_cell"]["cell_id"]: numbers(r) for r in records}


@ray.remote(num_cpus=1)
def import_in_worker() -> None:
    """A worker's first cell imports torch, the package and scikit-learn's digits: done while the driver works."""
    import kwta_robust.sweep.cells  # noqa: F401
    from kwta_robust.data import load_dataset

    load_dataset("digits", "train")


class HookedRay(RayExecutor):
    """The Ray executor with ``hook(fn, job)`` run in the worker instead of ``fn(job)`` (shipped by value)."""

    def __init__(self, hook, workers: int = 2, **options) -> None:
        super().__init__(workers, **options)
        self.hook = hook

    def map_unordered(self, fn, jobs, *, resources=None):
        return super().map_unordered(functools.partial(self.hook, fn), jobs, resources=resources)


def report_worker(folder: str, fn, job):
    """Writes where the job ran (pid, torch threads, the cores Ray reserved) to ``folder/<label>.json``."""
    reserved = ray.get_runtime_context().get_assigned_resources()
    facts = {"pid": os.getpid(), "threads": torch.get_num_threads(), "cpus": reserved.get("CPU")}
    (Path(folder) / f"{job.label}.json").write_text(json.dumps(facts))
    return fn(job)


def block_first_evaluation(folder: str, label: str, fn, job):
    """For cell ``label``, until ``folder/killed`` exists: train as usual, then write this worker's pid to
    ``folder/pid`` and block where the evaluation would start (the test kills the worker there)."""
    marker = Path(folder)
    if job.label == label and not (marker / "killed").exists():
        import kwta_robust.sweep.cells as cells

        def blocked(*args, **kwargs):
            (marker / "pid.tmp").write_text(str(os.getpid()))
            os.replace(marker / "pid.tmp", marker / "pid")
            time.sleep(120)
            raise AssertionError("the worker was not killed")

        cells.evaluate = blocked
    return fn(job)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cpus_free() -> bool:
    return ray.available_resources().get("CPU", 0) == 2


# ---------------------------------------------------------------------------------------------------------------
def test_ray_sweep_equals_the_inline_sweep(local_ray, inline_reference, tmp_path) -> None:
    folder = tmp_path / "where"
    folder.mkdir()
    cfg = SweepConfig.from_dict(tiny_config(grid=TWO_CELLS, executor={"name": "ray", "workers": 2,
                                                                      "cpus_per_cell": 1}))
    result = run_sweep(cfg, tmp_path / "out", executor=HookedRay(functools.partial(report_worker, str(folder))),
                       progress=False)
    assert result.failed == [] and result.manifest["status"] == "complete"
    assert result.manifest["executor"] == {"name": "ray", "workers": 2, "address": None, "max_retries": 3}
    assert result.manifest["config"]["executor"] == {"name": "ray", "workers": 2, "cpus_per_cell": 1}
    assert all(c["status"] == "done" and c["attempts"] == 1 and c["trained"] for c in result.manifest["cells"])
    assert cell_numbers(result.records()) == inline_reference  # bit-identical, cell by cell
    facts = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert len(facts) == 2 and all(f["pid"] != os.getpid() and f["threads"] == 1 and f["cpus"] == 1 for f in facts)
    assert len({f["pid"] for f in facts}) == 2  # two workers at once
    assert not any(p.progress for p in plan_cells(cfg, tmp_path / "out", progress=False))


def test_worker_killed_mid_cell_is_rerun(local_ray, inline_reference, tmp_path) -> None:
    folder = tmp_path / "marker"
    folder.mkdir()
    cfg = SweepConfig.from_dict(tiny_config(grid=TWO_CELLS, executor={"name": "ray", "workers": 2}))
    out = tmp_path / "out"
    victim = plan_cells(cfg, out)[1]
    hook = functools.partial(block_first_evaluation, str(folder), victim.label)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=run_sweep(cfg, out, executor=HookedRay(hook),
                                                                         progress=False)))
    thread.start()
    pid = int(wait_for(lambda: (folder / "pid").is_file() and (folder / "pid").read_text(), 60, "the blocked cell"))
    assert victim.checkpoint.is_file()  # killed in the middle: trained, not evaluated
    (folder / "killed").write_text("")
    os.kill(pid, signal.SIGKILL)
    thread.join(90)
    result = box["result"]
    assert result.failed == [] and result.manifest["status"] == "complete"
    entry = next(c for c in result.manifest["cells"] if c["cell_id"] == victim.cell_id)
    assert entry["status"] == "done" and entry["attempts"] == 1 and entry["trained"] is False  # checkpoint reused
    assert cell_numbers(result.records()) == {k: v for k, v in inline_reference.items()
                                              if k in {p.cell_id for p in plan_cells(cfg, out)}}


def test_killed_driver_resumes_without_redoing_finished_cells(local_ray, inline_reference, tmp_path) -> None:
    path = write_config(tmp_path / "two.yaml", tiny_config(grid=TWO_CELLS))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "kwta_robust.cli", "sweep", str(path), "--out-dir", str(out), "--no-progress",
               "--no-plots", "--executor", "ray", "--ray-address", local_ray, "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "sweep.json"

    def first_done():
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended early: {driver.stderr.read().decode()[-2000:]}")
        data = json.loads(manifest.read_text()) if manifest.is_file() else {}
        return [c for c in data.get("cells", []) if c["status"] == "done"]

    (finished,) = wait_for(first_done, 60, "the first cell")
    driver.send_signal(signal.SIGKILL)
    driver.wait(10)
    driver.stderr.close()
    record = out / finished["record"]
    before = (record.stat().st_mtime_ns, record.read_bytes())
    wait_for(cpus_free, 30, "Ray to end the dead driver's task")

    assert main(["sweep", str(path), "--out-dir", str(out), "--no-progress", "--no-plots", "--executor", "ray"]) == 0
    data = json.loads(manifest.read_text())
    assert data["status"] == "complete" and data["runs"] == 2 and data["previous_status"] == "interrupted"
    again = next(c for c in data["cells"] if c["cell_id"] == finished["cell_id"])
    assert again["attempts"] == 1 and again["evaluated"] is False and again["trained"] is False
    assert (record.stat().st_mtime_ns, record.read_bytes()) == before  # not touched by the re-run
    records = [load_record(out / c["record"]) for c in data["cells"]]
    assert cell_numbers(records) == {k: v for k, v in inline_reference.items()
                                     if k in {c["cell_id"] for c in data["cells"]}}


# Starts its own Ray (this module's is connected in-process) and lists every process it started: the node's (GCS,
# raylet, autoscaler monitor, ...) and the workers that ran the jobs; ray.shutdown is watched to see which were alive
# when it began.
OWN_RAY = r"""
import json, logging, os, sys, time
import ray
from kwta_robust.sweep.executors.ray import RayExecutor

def worker_pid(job):
    logging.getLogger("kwta_robust.test").warning("job %s ran in the worker", job)
    return os.getpid()

seen = {}
shutdown = ray.shutdown

def watched_shutdown(*args, **kwargs):
    seen["alive_at_shutdown"] = sorted(kind for kind, _ in ray._private.worker._global_node.live_processes())
    shutdown(*args, **kwargs)

ray.shutdown = watched_shutdown
executor = RayExecutor(2)
with executor.session():
    node = ray._private.worker._global_node
    seen["node"] = {kind: [info.process.pid for info in infos] for kind, infos in node.all_processes.items()}
    seen["workers"] = sorted({c.result for c in executor.map_unordered(worker_pid, [0, 1, 2, 3])})
    time.sleep(1)  # Ray forwards the workers' log lines to this process's stderr within about 100 ms
seen["connected_after"] = ray.is_initialized()
seen["colour_setting_after"] = os.environ.get("RAY_COLOR_PREFIX")
print(json.dumps(seen))
"""


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_a_ray_started_here_leaves_no_process_behind(tmp_path) -> None:
    """... and the worker log lines Ray forwards to a driver whose output is not a terminal come without colour
    codes (before, each line began with ESC[36m(kwta-robust job pid=...)ESC[0m in a log file); every line, as Ray
    does not collapse similar lines here (``RAY_DEDUP_LOGS=0``, whose summary lines are always coloured)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RAY_DEDUP_LOGS": "0"}
    done = subprocess.run([sys.executable, "-c", OWN_RAY], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"gcs_server", "raylet", "monitor"} <= set(seen["node"]) and seen["workers"]
    assert "monitor" not in seen["alive_at_shutdown"]  # stopped first: ray.shutdown does not wait a second for it
    assert {"gcs_server", "raylet"} <= set(seen["alive_at_shutdown"]) and seen["connected_after"] is False
    forwarded = sorted(line.split("WARNING kwta_robust.test: ")[-1] for line in done.stderr.splitlines()
                       if line.startswith("(kwta-robust job pid=") and "ran in the worker" in line)
    assert forwarded == [f"job {i} ran in the worker" for i in range(4)], done.stderr[-3000:]
    assert "\x1b[" not in done.stderr and seen["colour_setting_after"] is None  # the user's setting is back
    pids = [pid for pids in seen["node"].values() for pid in pids] + seen["workers"]
    wait_for(lambda: not any(running(pid) for pid in pids), 10, "the Ray processes to end")


def test_jobs_failures_resources_and_cancellation(local_ray) -> None:
    executor = create_executor("ray", 3)
    done = list(executor.map_unordered(int, ["1", "x", "3"]))  # int("x") raises in the worker
    assert sorted(c.job for c in done) == ["1", "3", "x"]
    assert {c.job: c.result for c in done if c.error is None} == {"1": 1, "3": 3}
    (bad,) = [c for c in done if c.error is not None]
    assert bad.error.startswith("ValueError: invalid literal for int()") and "\n" not in bad.error

    asked = []
    two = list(create_executor("ray", 2).map_unordered(float, ["2"], resources=lambda j: asked.append(j) or
                                                       Resources(cpus=2)))
    assert asked == ["2"] and two[0].result == 2.0
    with pytest.raises(ConfigError, match="executor.max_retries: expected an integer >= 0"):
        create_executor("ray", 1, max_retries=-1)

    sleepers = create_executor("ray", 3).map_unordered(time.sleep, [0, 60, 60])
    first = next(sleepers)  # the short job; the two long ones hold both cores
    assert first.job == 0 and first.error is None
    sleepers.close()  # the driver stops early: the outstanding tasks are cancelled, their cores freed
    wait_for(cpus_free, 30, "the cancelled tasks to free their cores")


def test_ray_tasks_apply_the_heap_policy(local_ray) -> None:
    """A task keeps freed memory for reuse (:mod:`kwta_robust.heap`), as the CLI and the pool workers do: an
    allocation pattern glibc's default heap trims every time faults no page after its first repetition."""
    import test_heap

    cloudpickle.register_pickle_by_value(test_heap)
    done = list(create_executor("ray", 2).map_unordered(test_heap.trimmed_heap_faults, [3, 3]))
    assert [c.error for c in done] == [None, None]
    assert [c.result[1:] for c in done] == [[0, 0]] * 2, [c.result for c in done]


def test_ray_shards_equal_the_unsharded_evaluation(local_ray, inline_sweep, tmp_path) -> None:
    (checkpoint,) = inline_sweep.glob("cells/kwta0.25-dense-*/model.pt")
    suite = {**tiny_config()["eval"], "batch_size": 8, "diagnostics": {"enabled": True, "gradient_batch": 8}}
    config = write_config(tmp_path / "suite.yaml", suite)
    argv = ["evaluate", str(checkpoint), "--config", str(config), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*argv, "--out", str(tmp_path / "three.json"), "--shards", "3", "--executor", "ray"]) == 0
    sharded = load_record(tmp_path / "three.json")
    assert comparable(sharded) == comparable(load_record(tmp_path / "one.json"))
    assert sharded.provenance["shards"]["executor"]["name"] == "ray" and sharded.detection["layers"]
    reruns = [f.evidence for f in sharded.diagnostics if f.evidence.get("source") == "rerun"]
    assert reruns and all(ev["sampled"] > 0 and ev["queries"] > 0 for ev in reruns)  # the 2nd round of Ray jobs


# ---------------------------------------------------------------------------------------------------------------
RAY_CONFIG_ERRORS = [
    ({"name": "ray", "adress": "auto"}, "executor: unknown key 'adress'; valid keys: name, workers, address"),
    ({"name": "ray", "max_retries": -1}, "executor.max_retries: expected an integer >= 0"),
    ({"name": "ray", "cpus_per_cell": 0}, "executor.cpus_per_cell: expected a finite number > 0"),
    ({"name": "ray", "gpus_per_cell": -1}, "executor.gpus_per_cell: expected a finite number >= 0"),
    ({"name": "ray", "address": " "}, "executor.address: expected 'auto' or HOST:PORT"),
    ({"name": "local", "cpus_per_cell": 2}, "executor.cpus_per_cell: the 'local' executor does not reserve resources"),
    ({"name": "local", "address": "auto"}, "executor.address: the 'local' executor takes no option 'address'"),
    ("ray", "executor: expected a mapping of keys"),
]


@pytest.mark.parametrize("executor,message", RAY_CONFIG_ERRORS, ids=[m[:40] for _, m in RAY_CONFIG_ERRORS])
def test_executor_options_are_checked_in_one_line(executor, message, tmp_path, capsys) -> None:
    data = tiny_config(executor=executor)
    with pytest.raises(ConfigError) as info:
        SweepConfig.from_dict(data)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert main(["sweep", str(write_config(tmp_path / "bad.yaml", data)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_options_and_a_missing_ray(tmp_path, monkeypatch, capsys) -> None:
    path = write_config(tmp_path / "s.yaml", tiny_config())
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--out-dir", str(out), "--ray-address", "auto", "--executor", "local"]) == 2
    assert capsys.readouterr().err.strip() == "error: --ray-address: only with --executor ray (got --executor local)"
    assert main(["sweep", str(path), "--out-dir", str(out), "--ray-address", "auto", "--dry-run"]) == 2  # the config's
    assert capsys.readouterr().err.strip() == ("error: --ray-address: only with the ray executor (the config's is "
                                               "'local'); add --executor ray")
    assert main(["sweep", str(path), "--out-dir", str(out), "--executor", "ray", "--cpus-per-cell", "2",
                 "--gpus-per-cell", "0.5", "--ray-address", "auto", "--dry-run"]) == 0
    assert "4 cells; config valid" in capsys.readouterr().out
    cfg = SweepConfig.from_dict(tiny_config()).with_overrides(
        executor="ray", options={"cpus_per_cell": 2.0, "gpus_per_cell": 0.5})
    from kwta_robust.sweep.placement import cell_resources
    assert cell_resources(cfg.executor.options())(plan_cells(cfg, out)[0]) == Resources(cpus=2.0, gpus=0.5)
    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed
    for argv in (["--executor", "ray"], []):
        config = path if argv else write_config(tmp_path / "r.yaml", tiny_config(executor={"name": "ray"}))
        assert main(["sweep", str(config), "--out-dir", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        field = "--executor" if argv else "executor.name"  # the flag that named Ray, else the config's key
        assert len(err) == 1 and err[0].startswith(f"error: {field}: 'ray' needs Ray, which is not installed")
        assert 'pip install -e ".[ray]"' in err[0]
    assert not out.exists()
