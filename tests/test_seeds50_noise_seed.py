"""The seed of a noise probe's draws is derived from the whole entry (kind, every level, draws, params as written),
so fields that do not change what a level draws (the other levels, the draw count, a default written out) still
redraw it. Changing that would move every recorded noise number, the quickstart's included: this pins the
derivation, so a change is deliberate, and checks that the README and the protocol note say exactly what feeds it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attacks.noise as noise
from kwta_robust.attack_plan import noise_seed
from kwta_robust.config import EvalConfig
from kwta_robust.protocol import NOISE_NOTE

NUMENTA = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def probe(**entry: object):
    config = {"dataset": "digits", "n_examples": 8, "noise": [{"kind": "numenta", **entry}]}
    return EvalConfig.from_dict(config).noise[0]


def by_hand(seed: int, kind: str, levels: list[float], draws: int, params: dict) -> int:
    text = json.dumps([seed, ["noise", kind, str(levels), str(draws), str(params)]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def test_the_probe_seed_is_the_documented_hash_of_the_whole_entry() -> None:
    assert noise_seed(0, probe()) == by_hand(0, "numenta", NUMENTA, 1, {}) == 1656740092  # the quickstart's probe
    assert noise_seed(0, probe(levels=[0, 0.05])) == by_hand(0, "numenta", [0.0, 0.05], 1, {})
    assert noise_seed(3, probe(draws=2, params={"value": 0.7469})) == by_hand(3, "numenta", NUMENTA, 2,
                                                                               {"value": 0.7469})
    # what the draws do not depend on, and what they do although the noise drawn is the same kind
    assert noise_seed(0, probe(levels=NUMENTA)) == noise_seed(0, probe())  # the defaults written out: the same
    same_noise = [probe(levels=NUMENTA + [0.55]), probe(draws=2), probe(params={"value": 1.0}),
                  probe(params={"value": 1})]
    assert len({noise_seed(0, p) for p in [probe(), *same_noise]}) == 5


def test_each_level_and_draw_has_the_documented_generator_seed() -> None:
    digest = hashlib.sha256(b"1656740092|numenta|0.05|0").digest()
    assert noise.derive_seed(1656740092, "numenta", 0.05, 0) == int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def test_the_readme_and_the_protocol_note_name_the_fields_that_feed_the_seed() -> None:
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert ('`derive_seed(seed, "noise", kind, levels, draws, params)` (`kwta_robust.config.derive_seed`: the first 4 '
            "bytes, big-endian, top bit cleared, of the SHA-256 of `json.dumps([seed, [str(key) for key in keys]])`"
            ) in readme
    assert '`attacks.noise.derive_seed(probe seed, kind, level, draw)`' in readme
    assert "A noise entry has no label or name, so nothing else feeds the seed." in readme
    assert "(kind, every level, draws, params)" in NOISE_NOTE
