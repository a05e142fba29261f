"""Mutation round on the command line (:mod:`kwta_robust.cli`, :mod:`kwta_robust.commands`): exit statuses, the
one-line errors, what is printed and the files written, each checked against hand-worked values."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import warnings
from pathlib import Path

import pytest

from attacks.errors import AttackConfigError
from eval_helpers import make_record, make_result
from kwta_robust import cli
from kwta_robust.cli import command_named, main
from kwta_robust.commands import console
from kwta_robust.commands import diff as diff_command
from kwta_robust.commands.common import (check_outputs, command_line, config_from_args, parse_factory_kwargs,
                                         sharding_from_args)
from kwta_robust.commands.console import ProgressAwareHandler, WarningLogger, configure_logging, progress_bars
from kwta_robust.errors import ConfigError
from kwta_robust.results import save_record
from test_cli_bpda_layers import write_config


def write_record(path: Path, label: str = "model", flags=(1, 1, 0, 0), status: str = "complete") -> Path:
    record = make_record([make_result("pgd", list(flags), eps=0.1)], label=label)
    record.status = status
    save_record(record, path)
    return path


# ---- console: log levels, warnings, progress bars, a broken handler ----

def bare_root(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """The root logger without handlers (as in a fresh ``kwta-robust`` process; pytest adds its capture handlers
    when the test body starts, so called there), restored afterwards."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    return root


@pytest.mark.parametrize(("verbose", "quiet", "level"), [
    (0, False, logging.INFO), (1, False, logging.INFO), (2, False, logging.DEBUG), (3, False, logging.DEBUG),
    (0, True, logging.WARNING), (2, True, logging.WARNING)])
def test_the_log_level_follows_v_and_q(monkeypatch: pytest.MonkeyPatch, verbose: int, quiet: bool, level: int) -> None:
    root = bare_root(monkeypatch)
    configure_logging(verbose, quiet)
    assert root.level == level
    assert len(root.handlers) == 1 and isinstance(root.handlers[0], ProgressAwareHandler)
    assert isinstance(warnings.showwarning, WarningLogger)


def test_one_message_of_two_categories_is_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    show = WarningLogger()
    with caplog.at_level(logging.WARNING):
        show(UserWarning("same text"), UserWarning, "/no/such/module.py", 1)
        show(DeprecationWarning("same text"), DeprecationWarning, "/no/such/module.py", 2)
        show(UserWarning("same text"), UserWarning, "/no/such/module.py", 3)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("py.warnings", "same text (UserWarning)"), ("py.warnings", "same text (DeprecationWarning)")]


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(console.sys, "stderr", Terminal())
    assert progress_bars(False) is True and progress_bars(True) is False
    monkeypatch.setattr(console.sys, "stderr", io.StringIO())
    assert progress_bars(False) is False


def test_a_broken_log_stream_never_raises_into_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    reported = []
    handler = ProgressAwareHandler(Broken())
    monkeypatch.setattr(handler, "handleError", reported.append)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    handler.emit(record)
    assert reported == [record]
    good = io.StringIO()
    ProgressAwareHandler(good).emit(record)
    assert good.getvalue() == "hello\n"


# ---- cli: parsing, exit statuses, error lines, signals ----

def test_command_named_skips_global_options_and_unknown_words() -> None:
    assert command_named(["-v", "-q", "diff", "a.json"]) == "diff"
    assert command_named(["--verbose", "table", "x"]) == "table"
    assert command_named(["bogus", "diff"]) is None and command_named(["-v"]) is None


def test_global_options_before_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_record(tmp_path / "a.json")
    assert main(["-v", "-q", "diff", str(a), str(a)]) == 0
    assert capsys.readouterr().out.startswith("same result")


def test_an_option_no_command_knows_names_that_commands_help(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_record(tmp_path / "a.json")
    for extra in (["--bogus"], ["--threads", "1"]):  # diff reads records only: it has no --threads
        with pytest.raises(SystemExit) as stop:
            main(["diff", str(a), str(a), *extra])
        assert stop.value.code == 2
        assert capsys.readouterr().err == f"error: unrecognized arguments: {' '.join(extra)}; " \
                                          "see kwta-robust diff --help\n"


def test_a_bad_choice_is_one_line_with_status_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["plugins", "no-such-kind"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument KIND: invalid choice: 'no-such-kind'")
    assert err.endswith("; see kwta-robust plugins --help\n")


def test_commands_that_run_torch_take_threads_and_the_others_do_not() -> None:
    parser, _ = cli.build_parser()
    has = {name: "--threads" in p._option_string_actions for name, p in parser.command_parsers.items()}
    assert {name for name, yes in has.items() if not yes} == {"table", "report", "diff", "plugins"}


@pytest.fixture
def fake_diff(monkeypatch: pytest.MonkeyPatch):
    """Replace the ``diff`` command's body: ``set_run(fn)``; its options are kept."""
    def set_run(fn) -> None:
        monkeypatch.setattr(diff_command, "run", fn)
    return set_run


@pytest.mark.parametrize("error", [ConfigError("--x: bad value; use 1"), AttackConfigError("pgd: steps must be >= 1")])
def test_user_errors_are_one_line_and_status_2(fake_diff, error: Exception, capsys: pytest.CaptureFixture) -> None:
    def run(args: argparse.Namespace) -> int:
        raise error
    fake_diff(run)
    assert main(["diff", "a", "b"]) == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_the_commands_status_is_the_exit_status(fake_diff) -> None:
    fake_diff(lambda args: 7)
    assert main(["diff", "a", "b"]) == 7
    fake_diff(lambda args: None)
    assert main(["diff", "a", "b"]) == 0


def test_an_error_not_out_of_memory_is_not_hidden(fake_diff) -> None:
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")
    fake_diff(run)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["diff", "a", "b"])


def test_sigterm_ends_a_command_as_ctrl_c_and_the_handler_is_restored(fake_diff, capsys: pytest.CaptureFixture) -> None:
    seen = []

    def run(args: argparse.Namespace) -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)
        return 0
    def mine(signum: int, frame: object) -> None:  # the caller's own handler, which main must put back
        raise AssertionError("not reached")
    fake_diff(run)
    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["diff", "a", "b"]) == 130
        assert seen == [cli._terminated] and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().err == "interrupted: nothing was saved\n"  # diff saves nothing and resumes nothing


def test_an_interrupted_training_says_it_does_not_resume(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from kwta_robust.commands import train

    def run(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "add_arguments", lambda parser: None)
    monkeypatch.setattr(train, "run", run)
    assert main(["train"]) == 130
    assert capsys.readouterr().err.startswith("interrupted: training does not resume")


def test_threads_reach_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kwta_robust.commands import evaluate
    monkeypatch.setattr(evaluate, "add_arguments", lambda parser: None)
    monkeypatch.setattr(evaluate, "run", lambda args: torch.get_num_threads())
    before = torch.get_num_threads()
    assert main(["evaluate", "--threads", "1"]) == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("command", "fix"), [
    ("train", "lower the training batch (--batch-size)"), ("sweep", "lower batch_size in the sweep config"),
    ("evaluate", "lower batch_size (--batch-size), diagnostics.gradient_batch")])
def test_out_of_memory_names_the_failure_and_the_commands_batch(command: str, fix: str) -> None:
    message = cli.out_of_memory(MemoryError("tried to allocate 9 GiB\nmore"), command)
    assert message.startswith(f"out of memory (tried to allocate 9 GiB); {fix}")
    assert message.endswith(", or free memory") and cli.out_of_memory(ValueError("x"), command) is None


# ---- diff: limits, counts, bad input ----

def changed_copy(source: Path, target: Path, n: int) -> Path:
    """``source`` with ``n`` new model keys: ``n`` differences, each ``model.kI: only in the second`` (not config
    keys: a config edited under its hash is refused before anything is compared)."""
    data = json.loads(source.read_text())
    data["model"].update({f"k{i}": i for i in range(n)})
    target.write_text(json.dumps(data))
    return target


@pytest.mark.parametrize(("limit", "shown", "more"), [(1, 1, 2), (2, 2, 1), (3, 3, None), (5, 3, None)])
def test_diff_prints_at_most_limit_lines_and_counts_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            limit: int, shown: int, more: int | None) -> None:
    a = write_record(tmp_path / "a.json")
    b = changed_copy(a, tmp_path / "b.json", 3)
    assert main(["diff", str(a), str(b), "--limit", str(limit)]) == 1
    lines = capsys.readouterr().out.splitlines()
    expected = ["3 field(s) differ:", *(f"  model.k{i}: only in the second" for i in range(shown))]
    assert lines == expected + ([f"  ... and {more} more (--limit)"] if more else [])


def test_diff_limit_below_one_and_a_file_that_is_no_record_are_one_line(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    a = write_record(tmp_path / "a.json")
    assert main(["diff", str(a), str(a), "--limit", "0"]) == 2
    assert capsys.readouterr().err == "error: --limit: must be >= 1, got 0\n"
    other = tmp_path / "other.json"
    other.write_text('{"config": {}}')
    assert main(["diff", str(a), str(other)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1


# ---- common: sharding, factory kwargs, the recorded command line ----

def shard_args(shards=None, executor=None, ray_address=None) -> argparse.Namespace:
    return argparse.Namespace(shards=shards, executor=executor, ray_address=ray_address)


def test_sharding_options() -> None:
    assert sharding_from_args(shard_args()) is None and sharding_from_args(shard_args(1)) is None
    plain = sharding_from_args(shard_args(3))
    assert (plain.shards, plain.executor, dict(plain.options)) == (3, "process", {})
    ray = sharding_from_args(shard_args(2, "ray", "auto"))
    assert (ray.shards, ray.executor, dict(ray.options)) == (2, "ray", {"address": "auto"})
    with pytest.raises(ConfigError, match=r"^--executor: only with --shards N \(N >= 2\)$"):
        sharding_from_args(shard_args(1, "ray"))
    with pytest.raises(ConfigError, match=r"^--ray-address: only with --shards"):
        sharding_from_args(shard_args(None, None, "auto"))
    with pytest.raises(ConfigError, match=r"^--ray-address: only with --executor ray \(got --executor process\)$"):
        sharding_from_args(shard_args(2, None, "auto"))


def test_factory_kwargs() -> None:
    assert parse_factory_kwargs(None) is None and parse_factory_kwargs('{"num_classes": 3}') == {"num_classes": 3}
    with pytest.raises(ConfigError, match=r"^--factory-kwargs: expected a JSON object"):
        parse_factory_kwargs("[1, 2]")
    with pytest.raises(ConfigError, match=r"^--factory-kwargs: not valid JSON"):
        parse_factory_kwargs("[" * 100_000)  # nested too deeply for the JSON parser: still one line


def test_the_recorded_command_line() -> None:
    args = argparse.Namespace(command="evaluate", verbose=2, quiet=True, no_resume=True, batch_size=8, data=None,
                              allow_pickle=False, n_examples=0, data_root="d")
    assert command_line(args) == ["kwta-robust", "evaluate", "--batch-size=8", "--data-root=d", "--n-examples=0",
                                  "--no-resume"]


def eval_args(tmp_path: Path, **changed: object) -> argparse.Namespace:
    values = {"config": None, "n_examples": None, "batch_size": None, "device": None, "seed": None, "data_root": None,
              "data": None, "bpda_layer": None, "checkpoint": None, "weights": None}
    return argparse.Namespace(**{**values, **changed})


def test_data_and_data_root_together_are_refused(tmp_path: Path) -> None:
    args = eval_args(tmp_path, config=str(tmp_path / "c.yaml"), data="x.pt", data_root="d")
    with pytest.raises(ConfigError, match=r"^--data-root: not used with --data \(the file is the data\)"):
        config_from_args(args)


def test_bpda_layer_without_a_bpda_attack_names_each_attack_once(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", attacks=[
        {"attack": "pgd", "params": {"steps": 2}}, {"attack": "pgd", "label": "pgd-long", "params": {"steps": 5}},
        {"attack": "fgsm"}])
    with pytest.raises(ConfigError) as caught:
        config_from_args(eval_args(tmp_path, config=str(config), bpda_layer=["auto"]))
    assert f"--bpda-layer: no BPDA attack of {config} acts on the top-level bpda_layers (it runs pgd, fgsm)" in str(
        caught.value)


def test_outputs_are_checked_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"^--out: .*folder is a folder"):
        check_outputs(eval_args(tmp_path), {"--out": str(folder)})
    data = tmp_path / "x.pt"
    with pytest.raises(ConfigError, match=r"^--out: .*x.pt is also given as --data"):
        check_outputs(eval_args(tmp_path, data=str(data)), {"--out": str(data)})
    check_outputs(eval_args(tmp_path, data=str(data)), {"--out": str(tmp_path / "r.json")})
