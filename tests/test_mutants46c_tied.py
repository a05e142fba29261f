"""Mutation review of attacks/tied_gates.py's second pass (groups that keep everything): a group all tied at the
threshold is read by the ties of the score itself when no tensor was ranked, and the strict pass still runs first,
so a gate it reads keeps its grouping (a finer grouping the second pass would allow does not take its place)."""

from __future__ import annotations

import torch

from attacks.tied_gates import tied_fit


def test_a_group_all_tied_at_the_threshold_reads_by_the_scores_own_ties_without_a_ranked_tensor() -> None:
    x = torch.tensor([[3.0, 1.0, 2.0, 0.5], [2.0, 2.0, 2.0, 2.0]])  # a >= top-2: the second row keeps all four
    fit = tied_fit(x, x * (x >= x.topk(2, dim=1).values[:, -1:]))
    assert fit is not None and (fit.grouping, fit.k, fit.k_min, fit.k_max) == ("dense", 2, 2, 4)


def test_the_strict_pass_reads_first_so_a_per_channel_gate_is_not_read_as_a_row_gate() -> None:
    x = torch.tensor([[[[9.0, 3.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]]]])  # a per-channel >= top-2, the 5s all tied
    fit = tied_fit(x, x * (x >= 5))  # the second pass alone would read "row" (k = 1; the second row keeps all)
    assert fit is not None and (fit.grouping, fit.k, fit.k_min, fit.k_max) == ("channel", 2, 5, 5)


def test_a_grouping_the_second_pass_cannot_explain_gives_way_to_the_next() -> None:
    x = torch.full((2, 2, 2, 4), 3.0)  # [N, C, H, W]: a >= threshold at 3 keeps all but one row of 1s
    x[0, 0, 0], x[0, 0, 1] = 1.0, 5.0
    fit = tied_fit(x, x * (x >= 3))  # "row" first: a row of 1s shows nothing yet is not 0, so "channel" reads it
    assert fit is not None and (fit.grouping, fit.k, fit.k_min, fit.k_max) == ("channel", 1, 4, 8)
