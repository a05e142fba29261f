"""The text of ``selections-outside-layers`` (:func:`kwta_robust.diagnostics.check_selections_outside`): why each
top-k selection no BPDA attack replaced was left to the gradient attacks, and what to do about it
(:mod:`kwta_robust.detect_selections`; the max-pool winner-take-all gates of :mod:`attacks.pool_gates`)."""

from __future__ import annotations

from kwta_robust.detect_selections import where_called


def outside_text(missed: list[dict]) -> tuple[str, list[str]]:
    """For the selection entries ``missed`` (``record.detection["selections"]``: ``op``, ``modules``, ``probed``,
    ``keeps_shape``, ``gate``) made outside every module BPDA acted on: the reasons the layer probe left them
    (``"; "``-joined) and the advice, one item per fix."""
    pooled = sorted({s["modules"][-1] for s in missed if s.get("probed") and s["op"].startswith("max_pool")})
    seen = sorted({s["modules"][-1] for s in missed if s.get("probed") and s.get("keeps_shape", True)} - set(pooled))
    resized = sorted({s["modules"][-1] for s in missed if s.get("probed") and not s.get("keeps_shape", True)})
    unseen = [s for s in missed if not s.get("probed")]
    reasons = ["a top-k written as a function call, inside a module with children, or in a module called with "
               "keyword arguments or returning more than one tensor"] if unseen else []
    reasons += [f"{', '.join(pooled)}: a module the probe saw, a winner-take-all from a max-pool"] if pooled else []
    advice = []
    if seen:
        reasons.append(f"{', '.join(seen)}: a module the probe saw, whose outputs did not show a top-k gate (the "
                       "input times a 0/1 mask with a constant number of winners)")
        advice.append(f"name {', '.join(seen)} in bpda_layers (bpda_layers: [auto, {seen[0]}], or --bpda-layer auto "
                      f"--bpda-layer {seen[0]}): BPDA relaxes it where its output is a top-k selection of its input, "
                      "else passes the gradient straight through (bpda-straight-through says where that is wrong)")
    if resized:
        reasons.append(f"{', '.join(resized)}: a module the probe saw, whose output is not shaped like its input (it "
                       "returns selected values, not a mask of its input)")
        advice.append(f"BPDA cannot replace {', '.join(resized)} without a backward map of your own: trust the "
                      "gradient-free attacks (gradient estimation, square), or write it as its input times a 0/1 mask")
    inline = [s for s in unseen if s.get("gate")]  # a gate the probe read inline: auto acts where it is built
    if inline:
        advice.append("add bpda with bpda_layers: auto (surrogate smooth, the default, or identity), which relaxes "
                      f"the gate where it is built ({where_called(inline[0])}), the model's own forward included")
    if len(inline) < len(unseen):
        advice.append("move the selection into a module of its own called with the tensor as its one argument "
                      "(bpda_layers: auto then finds it), or name a module around it in bpda_layers")
    if any(s["op"].startswith("max_pool") for s in missed):  # attacks/pool_gates.py: no relaxation of its own
        advice.append("a winner-take-all built from a max-pool has no smooth relaxation here: add bpda with "
                      "surrogate: model, gradient estimation and square")
    return "; ".join(reasons), advice
