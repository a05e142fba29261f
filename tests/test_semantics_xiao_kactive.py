"""Xiao's twin with an absolute ``k``: their only k-active conv gate ('kact', ``Sparsify2D_kactive``) takes the top
``k`` of the whole C·H·W volume, so channel mode with ``k`` (a per-channel top k their code does not have) is refused
with a one-line error instead of building a different layer under their name."""

from __future__ import annotations

import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.zoo import XiaoKWTA2d

FRAGMENT = "an absolute k (3) with kWTA mode channel ('reg') has no counterpart in Xiao's code"


def _spcnn(mode: str) -> torch.nn.Module:
    return ModelSpec.from_args("xiao-spcnn", activation={"name": "kwta", "k": 3, "mode": mode}, num_classes=10,
                               in_channels=1, input_size=8, num_channels=[2, 2, 4, 4], hidden_size=8).build()


def test_channel_mode_with_an_absolute_k_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        _spcnn("channel")
    message = str(caught.value)
    assert FRAGMENT in message and "use mode volume with k, or mode channel with a ratio" in message
    assert "\n" not in message


def test_the_layer_itself_refuses_a_per_channel_absolute_k() -> None:
    with pytest.raises(ValueError, match=r"absolute k \(2\) needs mode 'volume'"):
        XiaoKWTA2d(k=2, mode="channel")


def test_volume_mode_with_k_is_xiaos_kactive_over_the_whole_volume() -> None:
    gates = [m for m in _spcnn("volume").modules() if isinstance(m, XiaoKWTA2d)]
    assert len(gates) == 4 and {g.mode for g in gates} == {"volume"}
    # Sparsify2D_kactive(3) by hand on 2 channels of 2 × 2: the 3rd largest of all 8 entries is 4, so 9, 7, 4 win
    maps = torch.tensor([[[[9.0, 1.0], [4.0, 0.0]], [[7.0, 2.0], [3.0, -1.0]]]])
    expected = [[[[9.0, 0.0], [4.0, 0.0]], [[7.0, 0.0], [0.0, 0.0]]]]
    assert gates[0](maps).tolist() == expected


def test_the_cli_exits_2_naming_the_field_without_a_traceback(tmp_path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    code = main(["-q", "train", "--dataset", "digits", "--arch", "xiao-spcnn", "--arch-arg", "num_channels=[2,2,4,4]",
                 "--arch-arg", "hidden_size=8", "--activation", "kwta", "--k", "3", "--kwta-mode", "channel",
                 "--epochs", "0", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and FRAGMENT in err and "Traceback" not in err
    assert not out.exists()
