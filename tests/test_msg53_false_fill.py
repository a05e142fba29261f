"""A selection's mask applied with a ``False`` fill (kwta_robust/mask_uses.py, attacks/mask_assign.py), and the
credit of a mask read as its gate (:meth:`kwta_robust.mask_uses.MaskUses.credit` / ``spend``).

(1) ``x.masked_fill(~m, False)``, ``torch.where(m, x, False)``, ``x.masked_fill_(~m, False)`` and ``x[~m] = False``
write 0 into a floating-point ``x`` as the 0 fill does, but the layer probe did not count them as an application of
the mask (``_zero`` rejected ``bool``): a block that applies its top-k mask a second time that way read as one gate
(``LayerTarget("inline")``) and BPDA ran with the second mask cutting the gradient, no refusal (summed |grad| at X,
identity 53.1687, smooth 53.6975: the same cut gradient as the 0-fill twin forced to one gate). Now it reads as 2
gates, as the 0-fill twin does, and BPDA refuses. (2) The in-place gate on the ranked tensor written with ``False``
(``f.masked_fill_(f < t, False)``, ``f[f < t] = False``, ``f.scatter_(1, idx, False)``) was read by neither the probe
nor BPDA (attacks/mask_assign.py ``_zero``: ``type(value) in (int, float)``): BPDA refused a plain kWTA ("built no
gate BPDA could read"). Now both read it as the 0 form: one ``dense`` gate, BPDA gives the 0 form's gradient.
(3) A mask that the probe reads as its gate itself (``torch.heaviside(f - t, ones)``: a 0/1 mask of ``f - t``) is
credited once: its first application (``f * mf``) is that gate's, each later one is one gate more."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import detect_layers
from tests.test_pair52_mask_uses import REFUSAL, K, X, gradient


class Block(nn.Module):
    """``x + gates(conv(x))``, its top-k mask ``m`` applied as ``how`` says."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.c1, self.how = nn.Conv2d(4, 4, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:  # noqa: C901 - one branch per form
        f, how = self.c1(x).flatten(1), self.how
        t = f.topk(K, dim=1).values[:, -1:]
        fill = False if how.endswith("False") else 0
        if how.startswith("inplace_fill"):  # one gate, in place on the ranked tensor
            return x + f.masked_fill_(f < t, fill).view_as(x)
        if how.startswith("inplace_set"):
            f[f < t] = fill
            return x + f.view_as(x)
        if how.startswith("inplace_scatter"):
            return x + f.scatter_(1, f.topk(256 - K, dim=1, largest=False).indices, fill).view_as(x)
        if how.startswith("heaviside"):  # the mask read as its gate, then applied once, twice, three times
            mf = torch.heaviside(f - t, torch.ones_like(t))
            out = f * mf
            for _ in range(int(how[-1]) - 1):
                out = out * mf
            return x + out.view_as(x)
        m = f >= t
        g = f * m  # the first gate; the second application of m follows
        if how.startswith("fill"):
            out = g.masked_fill(~m, fill)
        elif how.startswith("where"):
            out = torch.where(m, g, fill)
        elif how.startswith("copy_fill"):
            out = g.clone().masked_fill_(~m, fill)
        else:  # "copy_set"
            out = g.clone()
            out[~m] = fill
        return x + out.view_as(x)


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(256, 10)).eval()


def read(how: str) -> tuple[list[tuple], LayerTarget | None]:
    detection = detect_layers(net(how), X, log=False)
    selections = [(s["op"], s.get("gate"), s.get("gates")) for s in detection.selections if s["op"] == "topk"]
    return selections, detection.auto_targets().get("1")


@pytest.mark.parametrize("form", ["fill", "where", "copy_fill", "copy_set"])
def test_a_second_application_with_a_false_fill_is_a_gate_and_bpda_refuses(form: str) -> None:
    twin = read(form + "_0")
    assert twin == ([("topk", "dense", 2)], LayerTarget("inline", gates=2))  # the 0 fill, as before
    assert read(form + "_False") == twin  # before: ([("topk", "dense", None)], LayerTarget("inline"))
    with torch.no_grad():
        assert torch.equal(net(form + "_False")(X), net(form + "_0")(X))  # the same model
    for backward in ("identity", "smooth"):
        with pytest.raises(AttackConfigError) as refused:  # before: ran, the second mask cutting the gradient
            gradient(net(form + "_False"), twin[1], backward)
        assert "\n" not in str(refused.value) and str(refused.value).startswith(REFUSAL), (form, backward)


@pytest.mark.parametrize("form", ["inplace_fill", "inplace_set", "inplace_scatter"])
def test_an_in_place_false_fill_on_the_ranked_tensor_is_read_as_the_zero_fill(form: str) -> None:
    twin = read(form + "_0")
    assert twin == ([("topk", "dense", None)], LayerTarget("inline"))
    assert read(form + "_False") == twin  # before: ([("topk", None, None)], None): no gate read
    for backward in ("identity", "smooth"):  # before: BPDA refused ("built no gate BPDA could read")
        out, grad = gradient(net(form + "_False"), LayerTarget("inline"), backward)
        twin_out, twin_grad = gradient(net(form + "_0"), LayerTarget("inline"), backward)
        assert torch.equal(out, twin_out)
        torch.testing.assert_close(grad, twin_grad, rtol=0, atol=0)
        assert not torch.allclose(grad, gradient(net(form + "_0"), None)[1], rtol=1e-3, atol=1e-5)  # relaxed


@pytest.mark.parametrize(("times", "gates"), [(1, None), (2, 2), (3, 3)])
def test_a_mask_read_as_its_gate_is_credited_its_first_application_only(times: int, gates: int | None) -> None:
    # credit += 2, or spend not spending, read (2, 3) as (None, None / 2); no credit read (1) as 2
    assert read(f"heaviside{times}")[0] == [("topk", "dense", gates)]
