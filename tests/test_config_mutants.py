"""Mutation round on the config toolkit (kwta_robust.configio): each test pins what a mutant of the strict scalar
types, the YAML loader or the one error wording changed without any earlier test noticing. Expected values are
written by hand: exact one-line messages naming the field, parsed values, YAML written out as text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pytest

from kwta_robust.configio import (AS_LIST, Amount, AtLeast, Description, Flag, Integer, Invalid, Number, Seed, Text,
                                  config_class, load_yaml_text, parse, read_yaml)
from kwta_robust.errors import ConfigError
from test_configio import message


@config_class(frozen=True, prefix="probe")
class Probe:
    """A config of one field of each scalar type, to check the types one by one."""

    count: Annotated[Integer, AtLeast(1)] = 1
    rate: Number = 0.5
    amount: Amount = 0.0
    on: Flag = True
    name: Text = "x"
    note: Description = ""
    items: Annotated[tuple[Number, ...], AS_LIST] = ()
    seed: Seed = 0


def _row_checked(value: int) -> int:
    if value > 3:
        raise Invalid("must be at most 3", at=(2,))  # an index below the field: rows[2]
    return value


@config_class(frozen=True, prefix="outer")
class Outer:
    """A config holding a config, to check the field paths of nested errors."""

    inner: Probe
    rows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.rows) > 2:
            _row_checked(self.rows[2])


def probe_error(**data) -> str:
    return message(lambda: parse(Probe, data))


# --- strict scalar types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, expected", [
    ({"rate": True}, "probe.rate: expected a number, got True"),  # a YAML true is not the number 1
    ({"rate": "0.5"}, "probe.rate: expected a number, got '0.5'"),
    ({"rate": -10 ** 400}, "probe.rate: expected a finite number, got an integer of 401 digits"),  # sign not counted
    ({"amount": "nan"}, "probe.amount: expected a finite number, got nan"),
    ({"amount": "-inf"}, "probe.amount: expected a finite number, got -inf"),
    ({"amount": "eight"}, "probe.amount: expected a number, got 'eight'"),
    ({"amount": True}, "probe.amount: expected a number, got True"),
    ({"on": 1}, "probe.on: expected true or false, got 1"),
    ({"on": "yes"}, "probe.on: expected true or false, got 'yes'"),
    ({"note": 5}, "probe.note: expected text, got int"),
    ({"name": ""}, "probe.name: expected a non-empty string, got ''"),
    ({"name": b"hi"}, "probe.name: expected a string, got b'hi'"),  # YAML !!binary is not text
    ({"name": 3}, "probe.name: expected a string, got 3"),
    ({"count": "3"}, "probe.count: expected an integer, got '3'"),
    ({"count": 2.0}, "probe.count: expected an integer, got 2.0"),
    ({"count": True}, "probe.count: expected an integer, got True"),
    ({"count": 0}, "probe.count: must be >= 1, got 0"),
    ({"seed": -1}, "probe.seed: must be >= 0, got -1"),
    ({"seed": 2 ** 63}, "probe.seed: must be <= 9223372036854775807, got 9223372036854775808"),
    ({"items": True}, "probe.items: expected a list, got bool"),
    ({"items": [0.5, "x"]}, "probe.items[1]: expected a number, got 'x'"),
    ({"items": "0.5"}, "probe.items[0]: expected a number, got '0.5'"),  # one value is a list of one
    ({"cout": 2}, "probe: unknown key 'cout'; valid keys: count, rate, amount, on, name, note, items, seed"),
])
def test_each_scalar_type_refuses_in_one_line_naming_the_field(data: dict, expected: str) -> None:
    assert probe_error(**data) == expected


def test_each_scalar_type_reads_what_it_should() -> None:
    got = parse(Probe, {"count": 1, "rate": 2, "amount": " -0.25 ", "on": False, "name": "n", "note": None,
                        "items": 0.5, "seed": 2 ** 63 - 1})
    assert (got.count, got.rate, got.amount, got.on, got.name, got.note, got.items, got.seed) == (
        1, 2.0, -0.25, False, "n", "", (0.5,), 9223372036854775807)
    assert type(got.rate) is float and parse(Probe, {"seed": 0}).seed == 0
    assert [parse(Probe, {"amount": text}).amount for text in ("8/255", "1e-3", "0.5", 3)] == [
        8 / 255, 0.001, 0.5, 3.0]


def test_a_config_that_is_not_a_mapping_is_named_by_its_prefix() -> None:
    assert message(lambda: parse(Probe, [1])) == "probe: expected a mapping of keys, got list"
    assert message(lambda: parse(Probe, 3, prefix="noise[1]")) == "noise[1]: expected a mapping of keys, got int"


@config_class(name="the probe")
class Named:
    """A config with a name for its key errors but no field prefix."""

    size: Integer = 1


def test_a_named_config_uses_its_name_for_key_errors_and_no_prefix_for_fields() -> None:
    assert message(lambda: parse(Named, {"sise": 2})) == "the probe: unknown key 'sise'; valid keys: size"
    assert message(lambda: parse(Named, {"size": "2"})) == "size: expected an integer, got '2'"
    assert message(lambda: Named(size=1.5)) == "size: expected an integer, got 1.5"


@config_class(frozen=True, prefix="both", name="the both config")
class Both:
    """A config with a prefix for its fields and a name for errors about its keys."""

    size: Integer = 1

    def __post_init__(self) -> None:
        if self.size > 3:
            raise ConfigError("size: too big; use at most 3")  # a whole message naming its own field


@config_class(frozen=True, prefix="holder")
class Holder:
    """A config holding a config that checks itself."""

    inner: Both | None = None


def test_a_config_error_raised_with_its_field_is_placed_under_the_config() -> None:
    assert message(lambda: parse(Both, {"size": 5}, prefix="")) == "size: too big; use at most 3"
    assert message(lambda: parse(Both, {"size": 5})) == "both.size: too big; use at most 3"
    assert message(lambda: parse(Holder, {"inner": {"size": 5}})) == "holder.inner.size: too big; use at most 3"
    assert message(lambda: parse(Both, {"sise": 1}, prefix="")) == (
        "the both config: unknown key 'sise'; valid keys: size")
    assert message(lambda: parse(Both, [], prefix="")) == "the both config: expected a mapping of keys, got list"
    assert message(lambda: parse(Holder, {"inner": {"sise": 1}})) == (  # the keys of the config in `Both | None`
        "holder.inner: unknown key 'sise'; valid keys: size")


@config_class(frozen=True, prefix="pairs")
class Pairs:
    """A config with a fixed-length tuple, whose error pydantic words itself."""

    pair: tuple[int, int] = (0, 0)


def test_an_error_in_pydantic_words_still_names_the_field() -> None:
    text = message(lambda: parse(Pairs, {"pair": [1, 2, 3]}))
    assert text.startswith("pairs.pair: ") and "2 items" in text


def test_nested_config_errors_carry_the_full_path() -> None:
    assert message(lambda: parse(Outer, {"inner": {"count": 0}})) == "outer.inner.count: must be >= 1, got 0"
    assert message(lambda: parse(Outer, {"inner": {"rate": "x"}})) == "outer.inner.rate: expected a number, got 'x'"
    assert message(lambda: parse(Outer, {"inner": {"cnt": 1}})) == (
        "outer.inner: unknown key 'cnt'; valid keys: count, rate, amount, on, name, note, items, seed")
    assert message(lambda: parse(Outer, {})) == "outer: missing key 'inner'"
    assert message(lambda: parse(Outer, {"inner": {}, "rows": [1, 2, 9]})) == "outer[2]: must be at most 3"


def test_a_misspelt_key_is_reported_before_the_key_it_misses() -> None:
    """A misspelt required key is also missing: the error names the misspelling (the fix), not 'missing key'."""
    from kwta_robust.config import EvalConfig

    assert message(lambda: EvalConfig.from_dict({"datset": "digits"})).startswith(
        "config: unknown key 'datset'; valid keys: description, dataset, split, ")
    assert message(lambda: parse(Outer, {"inr": {}})).startswith("outer: unknown key 'inr'; valid keys: inner, rows")


# --- YAML ------------------------------------------------------------------------------------------------------
def test_yaml_1_1_and_1_2_float_spellings_are_numbers() -> None:
    got = load_yaml_text("[1:30.5, -.5, +.5e1, .5, -1e-3, 1.5, ._, 1e, .inf, -.inf]")
    assert got[:6] == [90.5, -0.5, 5.0, 0.5, -0.001, 1.5]
    assert got[6:8] == ["._", "1e"]  # not numbers: text
    assert got[8:] == [math.inf, -math.inf]
    assert all(type(v) is float for v in got[:6])
    nan = load_yaml_text("x: .nan")["x"]
    assert isinstance(nan, float) and math.isnan(nan)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_yaml_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    assert message(lambda: read_yaml(folder, "--config")) == (
        f"--config: {folder} is a folder; give the path of a YAML file")
    assert message(lambda: read_yaml(tmp_path / "nope.yaml", "--eval")) == (
        f"--eval: no such file {str(tmp_path / 'nope.yaml')!r}")
    listed = write(tmp_path, "- 1\n- 2\n")
    assert message(lambda: read_yaml(listed, "--config")) == (
        f"--config: {listed} must hold a mapping of keys to values at the top level")
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe")
    assert message(lambda: read_yaml(binary, "--config")) == (
        f"--config: {binary} is not UTF-8 text, so not a YAML config (a checkpoint or another binary file?); give "
        "the YAML file")
    control = write(tmp_path, "seed: 1\nname: a\x07b\n", "control.yaml")
    assert message(lambda: read_yaml(control, "--config")) == (  # before: '... is not valid YAML: parse error'
        f"--config: {control} is not valid YAML: special characters are not allowed")
    bad = write(tmp_path, "a: 1\nb: [2\n")
    assert message(lambda: read_yaml(bad, "--config")).startswith(f"--config: {bad} is not valid YAML (line 3): ")


def test_an_empty_file_is_an_error_or_an_empty_mapping(tmp_path: Path) -> None:
    empty = write(tmp_path, "# nothing but a comment\n")
    assert message(lambda: read_yaml(empty, "--config")) == f"--config: {empty} is empty"
    assert read_yaml(empty, "--config", empty_ok=True) == {}


def test_a_key_given_twice_in_a_list_item_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "attacks:\n  - attack: pgd\n    label: a\n    label: b\n")
    assert message(lambda: read_yaml(path, "--config")) == (
        f"--config: {path} is not valid YAML (line 4): key 'label' is given twice (lines 3 and 4); keep one")


def test_an_integer_too_long_to_read_names_its_length(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nsteps: " + "9" * 5000 + "\n")
    assert message(lambda: read_yaml(path, "--config")) == (
        f"--config: {path} is not valid YAML (line 2): an integer of 5000 digits; write a number of at most 4,300 "
        "digits")


def test_an_integer_prefix_without_digits_is_not_called_too_long(tmp_path: Path) -> None:
    """YAML 1.1 reads ``0x_`` as an integer with no digits; before, the error said 'an integer of 3 digits; write a
    number of at most 4,300 digits', which is not what is wrong."""
    path = write(tmp_path, "seed: 0x_\n")
    assert message(lambda: read_yaml(path, "--config")) == (
        f"--config: {path} is not valid YAML (line 1): '0x_' has no digits after its 0b/0x prefix; write the digits, "
        "or quote it as text")


def _expanding(scalars: int) -> str:
    """A document expanding to ``1006 + 1000 * 998 + scalars + 1`` values: ``a`` is a list of 999 scalars (1,000
    values with the list), ``b`` 998 aliases of it (998,001), ``c`` a list holding itself (one value) and
    ``scalars`` scalars; the top-level mapping, its three keys and the lists ``b`` and ``c`` make the other 5."""
    return ("a: &a [" + ", ".join(["0"] * 999) + "]\nb: [" + ", ".join(["*a"] * 998) + "]\n"
            "c: &c [*c, " + ", ".join(["0"] * scalars) + "]\n")


def test_the_expanded_size_limit_is_one_million_values_exactly() -> None:
    """1 (mapping) + 3 keys + 1000 (a) + 1 + 998 * 1000 (b) + 1 + 1 + scalars (c, its alias of itself counted
    once) = 1,000,000 at 993 scalars; a recursive alias loads (its list holds itself)."""
    assert 1 + 3 + 1000 + 1 + 998 * 1000 + 1 + 1 + 993 == 1_000_000
    data = load_yaml_text(_expanding(993))
    assert len(data["b"]) == 998 and data["b"][0] is data["a"] and data["c"][0] is data["c"]
    import yaml

    with pytest.raises(yaml.YAMLError) as info:
        load_yaml_text(_expanding(994))
    assert str(info.value).splitlines()[0] == (
        "its aliases (*name) expand to more than 1,000,000 values; write the values out, or use fewer aliases of "
        "aliases")
