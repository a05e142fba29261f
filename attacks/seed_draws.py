"""What an attack draws first from its ``seed``, as it declares where it registers (``register_attack(...,
draws=...)``, :attr:`attacks.base.AttackInfo.draws`).

A declaration is a function of the attack's full parameters (its factory's defaults with the given ones on top)
returning the name of its first draw from its seed, or ``None`` where it draws nothing with it (it takes ``seed``
for the common interface only). Two attacks whose first draws share a name make the same first draws from one seed,
so their runs are not independent there (``kwta_robust.bpda_seeds`` warns of BPDA stages and plain attacks given
the same seed). The names used by this package:

* :data:`RANDOM_START`: ``u = torch.rand(x.shape)`` from a generator seeded with ``seed`` (Linf; L2: the
  ``torch.randn(x.shape)`` direction), the start in the eps ball of PGD and EOT
  (:meth:`attacks.base.ThreatModel.random_start`), APGD (``attacks.apgd.reference_start``, on the sphere), gradient
  estimation with ``random_start`` and FAB's restarts after the first (``attacks.fab.random_half_start``, at half
  the radius): the same noise up to a per-sample scale (``tests/test_rev51_plain_seed_first_draw.py``).
* :data:`MODEL_NOISE`: a randomized model's own noise, drawn from torch's global generator that
  :func:`attacks.rng.rng_scope` seeds with ``seed`` (EOT without a random start; a transfer attack's source or
  BPDA's model where the inner attack draws nothing from that seed). A deterministic model draws nothing there.
* any other name: a draw alike only the draws of attacks declaring that name (``square``'s stripes and windows,
  gradient estimation's Gaussian probes, foolbox's blended uniform noise of HopSkipJump and Boundary).

An attack registered without a declaration (a plug-in that says nothing) counts as drawing, its first draw named
after itself: alike only another run of that attack.
"""

from __future__ import annotations

from typing import Any, Mapping

from attacks.base import attack_defaults, attack_info
from attacks.errors import RegistryError

#: The seeded random start in the eps ball (see the module docstring).
RANDOM_START = "random start"
#: A randomized model's noise from the global generators seeded with the attack's seed (see the module docstring).
MODEL_NOISE = "model noise"


def draws_nothing(params: Mapping[str, Any]) -> None:
    """Declaration of an attack that takes ``seed`` for the common interface only (FGSM, CW, DeepFool)."""
    return None


def random_start(params: Mapping[str, Any]) -> str:
    """Declaration of an attack that always starts at a seeded random point (APGD)."""
    return RANDOM_START


def random_start_if_set(params: Mapping[str, Any]) -> str | None:
    """Declaration of PGD: :data:`RANDOM_START` unless ``random_start`` is false (then it draws nothing)."""
    return None if params.get("random_start") is False else RANDOM_START


def later_restarts(params: Mapping[str, Any]) -> str | None:
    """Declaration of FAB: restart 0 starts at ``x``; :data:`RANDOM_START` where ``restarts`` is above 1."""
    restarts = params.get("restarts")
    return None if isinstance(restarts, int) and restarts <= 1 else RANDOM_START


def first_draw_of(name: str, params: Mapping[str, Any]) -> str | None:
    """What the registered attack ``name`` given ``params`` draws first from its seed: its declaration applied to its
    defaults with ``params`` on top, ``name`` where it declares nothing; ``None`` where it draws nothing. A
    declaration that raises, or returns no name, is a :class:`~attacks.errors.RegistryError` naming the attack."""
    info = attack_info(name)
    if info.draws is None:
        return name
    try:
        drawn = info.draws({**attack_defaults(name), **params})
    except RegistryError:  # a wrapper's inner attack's own (transfer, bpda: first_draw_of of the inner), as it is
        raise
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug (a parameter it lacks), named in one line
        raise RegistryError("attack", f"attack {name!r}: its draws declaration raised {type(exc).__name__}: {exc}; "
                                      "make it a function of the attack's parameters (its defaults included)") from exc
    if drawn is not None and (not isinstance(drawn, str) or not drawn):
        raise RegistryError("attack", f"attack {name!r}: its draws declaration returned {drawn!r}; return the name of "
                                      f"its first draw from its seed (e.g. {RANDOM_START!r}) or None for nothing")
    return drawn


def wrapped_draw(inner: str, inner_params: Mapping[str, Any] | None, seed: Any) -> str:
    """What an attack running ``inner`` with ``inner_params`` (whose ``seed`` defaults to the wrapper's ``seed``)
    inside :func:`attacks.rng.rng_scope` of its ``seed`` draws first from that seed: the inner attack's first draw
    where it runs with that seed and draws, else :data:`MODEL_NOISE` (a randomized model's noise)."""
    given = dict(inner_params or {})
    if given.get("seed", seed) == seed:
        drawn = first_draw_of(inner, {**given, "seed": seed})
        if drawn is not None:
            return drawn
    return MODEL_NOISE


__all__ = ["MODEL_NOISE", "RANDOM_START", "draws_nothing", "first_draw_of", "later_restarts", "random_start",
           "random_start_if_set", "wrapped_draw"]
