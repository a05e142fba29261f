"""A researcher's walk with Xiao et al.'s (ICLR 2020) own kWTA ResNet code: ``Sparsify2D_vol`` gates, trained under
``nn.DataParallel`` and saved as ``{'net': state_dict, 'acc': ..., 'epoch': ...}``, evaluated on a CIFAR-10 root in
torchvision's on-disk format (``cifar-10-batches-py/`` pickles).

Found on the walk:

* a CIFAR-10 copy failing torchvision's MD5 check stopped ``train`` with ``train needs the official files``, where
  ``train --data FILE`` trains on the same data file ``evaluate --data`` reads (README, "Training on a data file of
  your own"): the line now names ``--data FILE`` for evaluate, compare and train alike;
* the LaTeX paired comparison of kWTA against its ReLU twin set a negative difference and its interval (``-75.0``,
  ``-95.5 to -8.5``) with text mode's hyphen beside the ``$-$`` of ``kwta $-$ relu``: a number's sign is now ``$-$``.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_cifar10_user import error_line, write_tiny_cifar


def test_train_on_a_cifar_copy_failing_md5_names_trains_own_data_file_flag(tmp_path: Path, capsys) -> None:
    write_tiny_cifar(tmp_path / "data")  # the release's format, not its files: torchvision's MD5 check fails
    line = error_line(capsys, ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
                                "--arch", "cnn", "--epochs", "1", "--out", str(tmp_path / "net.pt")])
    assert "fail torchvision's MD5 check" in line
    assert "train needs the official files" not in line
    assert "evaluate, compare or train: --data FILE" in line
    assert not (tmp_path / "net.pt").exists()


def _paired_latex(first_flags: list[int], second_flags: list[int]) -> str:
    """The LaTeX of ``table`` on two records of the same 8 samples, the first paired with the second."""
    from kwta_robust.formats import render_stdout
    from tests.eval_helpers import make_record, make_result

    kwta = make_record([make_result("pgd", first_flags)], label="kwta")
    relu = make_record([make_result("pgd", second_flags)], label="relu")
    relu.model["activation"] = "relu"
    return render_stdout([kwta, relu], "latex")


def test_a_negative_paired_difference_is_set_with_latexs_minus_not_a_hyphen() -> None:
    """The paper's paired table of kWTA against its ReLU twin (kWTA 0 of 8 robust, ReLU 6 of 8): ``-75.0`` in text
    mode is a hyphen before the number, beside the ``$-$`` the same table's ``kwta $-$ relu`` has."""
    text = _paired_latex([0] * 8, [1] * 6 + [0] * 2)
    rows = [line for line in text.splitlines() if line.startswith(r"kwta $-$ relu & worst case")]
    assert len(rows) == 1, text
    cells = rows[0].split(" & ")
    assert cells[3] == "$-$75.0"
    low, high = cells[4].split(" to ")
    assert low.startswith("$-$") and high.startswith("$-$"), cells[4]
    assert not any(c.startswith("-") for c in cells) and " -" not in rows[0]
    # a hyphen inside a name or an exponent is no sign: it stays
    from kwta_robust.formats.latex import _latex_cell
    from kwta_robust.report import Cell

    assert _latex_cell(Cell("apgd-ce Linf 8/255")) == "apgd-ce Linf 8/255"
    assert _latex_cell(Cell("sign < 1e-6")) == r"sign \textless{} 1e-6"
    assert _latex_cell(Cell("+75.0")) == "+75.0"

