"""A CIFAR-10 user's walk (session 53). ``--data-root DIR`` with a config whose data set ships with the package
(mnist5k, digits, the ``*-samples`` sets) was ignored without a word: a CIFAR-10 user who ran ``evaluate
--model-factory ... --config eval_configs/quick.yaml --data-root data`` got a record of mnist5k numbers (only a
warning that the model broadcast grey images to three channels). ``evaluate`` and ``compare`` now refuse it in one
line naming the flag, the config's data set and the fix (a data set read from disk in ``dataset:``, or ``--data
FILE``).

``--seed S`` read "override seed" in ``--help``, but with the shipped configs (``sample_seed`` null) it also picks
the samples: a user who ran ``--seed 0/1/2`` for the spread over attack seeds got other images each time (``diff``
listed ``dataset.sample_seed`` and the indices). The help says so and names ``sample_seed``.

``attack: bpda-smooth`` (the label every table and the shipped configs show), ``autoattack`` and ``apgd`` got only
the list of known attacks; the error now adds the entry to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from test_cli_eval import write_checkpoint, write_config
from test_cifar10_user import error_line

FIX = ("that set ships with the package and is read from no folder, so the run would evaluate {name}, not the data "
       "there; to evaluate a data set on disk set dataset: in the config to one of cifar10, fashion-mnist, mnist, "
       "svhn, or give your own images with --data FILE; else drop --data-root")


@pytest.mark.parametrize("dataset", ["mnist5k", "digits"])
def test_evaluate_refuses_a_data_root_its_bundled_data_set_would_ignore(tmp_path: Path, dataset: str,
                                                                       capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", dataset=dataset, n_examples=4, batch_size=4)
    (tmp_path / "data").mkdir()
    line = error_line(capsys, ["evaluate", str(write_checkpoint(tmp_path / "m.pt")), "--config", str(cfg),
                               "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "r.json"),
                               "--no-progress"])
    assert line == f"error: --data-root: not used with dataset {dataset} of {cfg}: " + FIX.format(name=dataset)
    assert not (tmp_path / "r.json").exists()


def test_compare_and_a_dry_run_refuse_it_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4)
    models = [str(write_checkpoint(tmp_path / f"{name}.pt", seed=i)) for i, name in enumerate(("a", "b"))]
    line = error_line(capsys, ["compare", *models, "--config", str(cfg), "--data-root", str(tmp_path),
                               "--out-dir", str(tmp_path / "cmp"), "--no-progress"])
    assert line == f"error: --data-root: not used with dataset mnist5k of {cfg}: " + FIX.format(name="mnist5k")
    line = error_line(capsys, ["evaluate", models[0], "--config", str(cfg), "--data-root", str(tmp_path),
                               "--dry-run"])
    assert line.startswith("error: --data-root: not used with dataset mnist5k of ")
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_the_seed_help_says_it_also_picks_the_samples(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("--seed S override seed (the attacks' seeds; it also picks the samples where the config's sample_seed "
            "is null, as in eval_configs/: fix sample_seed to vary the attacks alone)") in text


@pytest.mark.parametrize("name, fix", [
    ("bpda-smooth", "('bpda-smooth' is a label: a BPDA entry is attack: bpda with its surrogate in params, e.g. "
                    "{attack: bpda, label: bpda-smooth, params: {surrogate: smooth}} as in "
                    "eval_configs/quickstart.yaml)"),
    ("AutoAttack", "(AutoAttack's standard attacks are apgd-ce, apgd-t, fab-t and square, each an entry of its own "
                   "as in eval_configs/cifar10.yaml)"),
    ("apgd", "(APGD by its loss: apgd-ce (cross-entropy), apgd-dlr or apgd-t (targeted DLR))"),
])
def test_an_attack_label_or_family_name_gets_the_entry_to_write(name: str, fix: str) -> None:
    config = {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": name}]}
    with pytest.raises(ConfigError) as error:
        EvalConfig.from_dict(config)
    text = str(error.value)
    assert text.startswith(f"attacks[0].attack: unknown attack {name!r}; known attacks: apgd-ce, ") and text.endswith(
        f"transfer {fix}"), text
    with pytest.raises(ConfigError) as error:  # a name that is neither keeps the plain list
        EvalConfig.from_dict({**config, "attacks": [{"attack": "pgdd"}]})
    assert str(error.value).endswith("square, transfer")
