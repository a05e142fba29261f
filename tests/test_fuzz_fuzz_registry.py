"""Fuzz round on the plug-in registries: registering something that is not callable. ``@register_attack`` and
``@register_check`` put on a constant raised a raw ``AttributeError`` (``'int' object has no attribute
'__module__'``); ``register(name, 42)`` on the surrogate, pruning-method, format, executor, attack, data set and
diagnostic registries was accepted, and the plug-in failed only where it was used (a ``TypeError`` deep in a run), or
replaced a built-in's lookup with an ``AttributeError``. Each is now one :class:`RegistryError` line naming the kind,
the name and the fix, and nothing is registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from attacks.base import REGISTRY as ATTACKS
from attacks.base import register_attack
from attacks.errors import RegistryError
from attacks.noise import NOISE_PROBES, GaussianNoise
from kwta_robust.diagnostics import CHECKS, register_check
from kwta_robust.plugins import KINDS


def _refused(registry, register, name: str) -> str:
    with registry.preserved():
        with pytest.raises(RegistryError) as info:
            register()
        assert name not in registry
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", [42, None, "pgd"])
def test_register_attack_on_something_not_callable_is_one_line(value: object) -> None:
    assert _refused(ATTACKS, lambda: register_attack("fuzz-nc")(value), "fuzz-nc") == (
        f"attack: attack 'fuzz-nc': {value!r} is not callable; register a function or class")


def test_register_check_on_something_not_callable_is_one_line() -> None:
    assert _refused(CHECKS, lambda: register_check("fuzz-nc", "never")(42), "fuzz-nc") == (
        "diagnostics: diagnostic check 'fuzz-nc': 42 is not callable; register a function or class")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_registry_refuses_a_constant_naming_its_field(kind: str) -> None:
    registry = KINDS[kind].registry()
    message = _refused(registry, lambda: registry.register("fuzz-constant", 42), "fuzz-constant")
    assert message.startswith(f"{registry.field}: {registry.kind} 'fuzz-constant': ")
    fix = "register a function or class" if registry.decorator is None else "use that decorator"
    assert message.endswith(fix)


def test_a_record_registry_refuses_a_bare_function_under_a_built_in_name() -> None:
    """It was an AttributeError ('function' object has no attribute 'factory') from the twice-registered check."""
    assert _refused(ATTACKS, lambda: ATTACKS.register("fgsm", len), "fuzz-unused") == (
        "attack: attack 'fgsm': builtin_function_or_method is not what @register_attack(name, norms=..., kind=...) "
        "registers; use that decorator")
    assert "fgsm" in ATTACKS and callable(ATTACKS.get("fgsm").factory)  # the built-in is still there


@dataclass(frozen=True)
class _Probe(GaussianNoise):
    name: ClassVar[str] = "fuzz-probe"


def test_a_noise_probe_instance_is_refused_its_class_accepted() -> None:
    """An instance has the probe's members, so the probe check let it in; building it then called the instance."""
    message = _refused(NOISE_PROBES, lambda: NOISE_PROBES.register("fuzz-probe", _Probe()), "fuzz-probe")
    assert message == "noise: noise probe 'fuzz-probe': _Probe() is not callable; register a function or class"
    with NOISE_PROBES.preserved():
        NOISE_PROBES.register("fuzz-probe", _Probe)
        assert NOISE_PROBES.get("fuzz-probe") is _Probe
