"""A declared ``kwta_ratio`` is shown in the activation column only where it gives every gate's k
(:func:`kwta_robust.layer_text.fits_every_gate`): ours, ``floor(ratio · N)``, or ``ratio · N`` rounded either way.
Session 49 showed it wherever every gate's k was within one unit of ours, so a declared 0.5 on gates keeping 1 of 4
(k/N 0.25: one unit from ``floor(0.5 · 4) = 2``) printed ``top-k 0.5`` and hid the measured 0.25 from the tables."""

from __future__ import annotations

import pytest

import kwta_robust.layer_text as layer_text
from kwta_robust.report import activation_text
from test_units49_declared_ratio import _own


def test_a_declared_ratio_one_unit_off_a_whole_product_leaves_the_measured_ratio() -> None:
    record = _own(0.5, counts=((1, 4), (1, 4)))
    assert layer_text.declared_ratio(record) is None  # was 0.5
    assert activation_text(record) == "top-k 0.25 channel (2 found by the probe)"  # was 'top-k 0.5 channel ...'


@pytest.mark.parametrize("counts", [((14, 144), (2, 16), (6, 64)), ((15, 144), (1, 16), (7, 64))])
def test_a_ratio_rounded_either_way_still_shows_the_declaration(counts: tuple) -> None:
    record = _own(0.1, counts=counts)  # 0.1 · N = 14.4, 1.6, 6.4: floor or ceil
    assert layer_text.declared_ratio(record) == 0.1
