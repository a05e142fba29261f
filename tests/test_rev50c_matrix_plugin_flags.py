"""A compare record's matrix cell recomputes the flags its transfer attacks change (cmpflags50,
:func:`kwta_robust.matrix_transfer.suite_flags`), with the checks as this process has them. Those read whether a
registered attack takes gradients (``uses_gradient``): an EOT of one's own registered by the evaluation's script as
kind ``adaptive`` with ``uses_gradient=True`` is unknown to ``kwta-robust table --matrix``, which then counts it as
gradient-free, so ``gates-without-bpda`` was "recomputed" as a warning where evaluate (with the plug-in) raises it
critical, and the legend said the flags were evaluate's. Now such a record keeps its flags as stored and the legend
names the attack (rev50c)."""

from __future__ import annotations

import dataclasses

from kwta_robust.matrix import build_matrices, legend
from kwta_robust.matrix_transfer import suite_flags, suite_view
from test_cmpflags50_matrix_flags import records  # noqa: F401 - the module's fixture: compare of a top-k MLP

PLUGIN = "rev50c-own-eot"


def _with_plugin(record):
    """``record`` with a result of an unregistered plug-in attack of kind ``adaptive`` (a copy of its pgd result:
    no sample broken more, so no beats-flag), before its transfer attacks, as the plug-in's evaluation ran it."""
    pgd = next(r for r in record.results if r.source is None)
    own = dataclasses.replace(pgd, label="own-eot", attack=PLUGIN, kind="adaptive")
    provenance = {**record.provenance, "plugins": {"attacks": {PLUGIN: {"origin": "script"}}}}
    return dataclasses.replace(record, results=[pgd, own, *record.results[1:]], provenance=provenance)


def test_an_unregistered_plugin_attack_keeps_the_flags_as_stored(records: dict) -> None:  # noqa: F811
    kwta, relu = records["compared"]
    plugged = _with_plugin(kwta)
    assert suite_flags(plugged, suite_view(plugged)) == (plugged.diagnostics, [])
    assert suite_view(plugged).diagnostics == plugged.diagnostics  # before: gates-without-bpda recomputed
    line = next(n for n in legend(build_matrices([plugged, relu])) if n.startswith("records with transfer attacks:"))
    assert f"flags as stored: plug-in attack(s) {PLUGIN} not registered here" in line
    assert "flags recomputed" not in line
