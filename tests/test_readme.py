"""README.md against the code: what a reader copies from it must exist.

* every ``--option`` of a ``kwta-robust SUBCOMMAND ...`` command line (fenced shell blocks, inline code spans such as
  ``table --protocol``, and the commands in the comments of ``eval_configs/*.yaml``) is an option of that
  sub-command's argparse parser (:func:`kwta_robust.cli.build_parser`), and every sub-command named in a shell block
  exists; an option the README names outside such lines belongs to some sub-command, a benchmark script or ``ray``;
* every attack, noise probe and surrogate of the Attacks table is registered and every registered attack and noise
  probe is in that table; the suites, table formats, executors, plug-in entry point groups, diagnostics flags, data
  sets and architectures the README names are the registered ones;
* every ``eval_configs/*.yaml`` the README names exists and loads as the config it is (evaluation, training or
  sweep), and every repository path the README or a config comment names exists;
* every Python name it gives (``kwta_robust.data.TensorData``, ``kwta_robust.zoo:xiao_spcnn``) resolves, every
  ``diagnostics.KEY`` is a key of that section, and the defaults it quotes in numbers (``zero_gradient_fraction``'s
  10%, the budget check's 3x and 32 samples, ``batch_size: 256``, 11 draws per verdict, ...) are the code's;
* the effective settings it shows for the quickstart's attacks are what this version builds, and the columns of its
  ``table --protocol`` example are the command's;
* every link leads to a file of the repository and, with ``#anchor``, to a heading there.

The checkers are plain functions of a text, tested on small strings (a bogus option must be reported). Nothing here
runs a command, trains or evaluates; no network.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

import pytest
import yaml

from kwta_robust.cli import COMMANDS, build_parser
from kwta_robust.plugins import KINDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"kwta-robust +([a-z][\w-]*)")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
#: Where a command's words end on a shell line: a comment, the next command of a list or a pipe.
COMMAND_END = re.compile(r" #| && |;| \| ")
#: Options the README names for other programs than kwta-robust and its benchmarks: ``ray start``.
OTHER_PROGRAMS = MappingProxyType({"--head": "ray start", "--address": "ray start", "--num-gpus": "ray start"})
#: Each sub-command's option strings.
Options = Mapping[str, frozenset[str]]
#: Repository folders whose paths the README names.
REPO_PATH = re.compile(r"^(?:attacks|kwta_robust|tests|benchmarks|eval_configs|scripts|studies|docs)/[\w./-]+$")


@dataclass(frozen=True)
class CommandLine:
    """One ``kwta-robust`` command as the README shows it: where, the sub-command and the words after it."""

    where: str
    command: str
    words: str


def line_of(text: str, offset: int) -> int:
    """The 1-based line number of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1


def _commands_in(chunk: str, where: str) -> Iterator[CommandLine]:
    """The ``kwta-robust SUB ...`` commands of one shell line (continuations already joined)."""
    for match in COMMAND.finditer(chunk):
        rest = chunk[match.end():]
        rest = rest[:next_command.start()] if (next_command := COMMAND.search(rest)) else rest
        rest = rest[:end.start()] if (end := COMMAND_END.search(rest)) else rest
        yield CommandLine(where, match.group(1), rest)


def command_lines(text: str, name: str = "README.md") -> list[CommandLine]:
    """Every ``kwta-robust`` command of a Markdown text: in fenced blocks that are not Python, YAML or TOML (a
    trailing ``\\`` joins the next line), and in inline code spans that start with a sub-command's name or hold
    ``kwta-robust SUB``. Spans naming no known sub-command (an error message quoting "another kwta-robust run") are
    prose, not commands."""
    found: list[CommandLine] = []
    fenced: list[tuple[int, int]] = []
    for block in FENCE.finditer(text):
        fenced.append(block.span())
        if block.group(1) in ("python", "yaml", "toml"):
            continue
        number, joined = line_of(text, block.start(2)), ""
        for offset, line in enumerate(block.group(2).splitlines()):
            number = number if joined else line_of(text, block.start(2)) + offset
            joined += line[:-1] + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                found.extend(_commands_in(joined, f"{name}:{number}"))
                joined = ""
    for span in SPAN.finditer(text):
        if any(a <= span.start() < b for a, b in fenced):
            continue
        code, where = span.group(1).replace("\n", " "), f"{name}:{line_of(text, span.start())}"
        if (match := COMMAND.search(code)) and match.group(1) in COMMANDS:
            found.extend(c for c in _commands_in(code[match.start():], where) if c.command in COMMANDS)
        elif code.split(" ", 1)[0] in COMMANDS and " " in code:
            found.extend(_commands_in(f"kwta-robust {code}", where))
    return found


def config_command_lines(text: str, name: str) -> list[CommandLine]:
    """The ``kwta-robust`` commands in the comments of a YAML config (``#   kwta-robust train --config ...``)."""
    found: list[CommandLine] = []
    for number, line in enumerate(text.splitlines(), 1):
        comment = line.partition("#")[2]
        found.extend(_commands_in(comment, f"{name}:{number}"))
    return found


def parser_options() -> Options:
    """Each sub-command's option strings, from the parser ``kwta-robust`` itself builds."""
    parser, _ = build_parser()
    return {name: frozenset(sub._option_string_actions) for name, sub in parser.command_parsers.items()}


def option_problems(commands: Iterable[CommandLine], options: Options) -> list[str]:
    """One line per unknown sub-command and per option its sub-command does not take."""
    problems: list[str] = []
    for line in commands:
        if line.command not in options:
            problems.append(f"{line.where}: kwta-robust {line.command}: no such sub-command")
            continue
        problems.extend(f"{line.where}: kwta-robust {line.command} has no option {option}"
                        for option in OPTION.findall(line.words) if option not in options[line.command])
    return problems


def stray_options(text: str, options: Options, elsewhere: Iterable[str]) -> list[str]:
    """The options a text names that no sub-command takes and that are not in ``elsewhere`` (options of the
    benchmark scripts and other programs)."""
    known = set().union(*options.values(), elsewhere)
    return sorted({option for option in OPTION.findall(text) if option not in known})


def benchmark_options() -> set[str]:
    """The option strings the benchmark scripts declare (read from their source, nothing imported)."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "benchmarks").glob("*.py")))
    return set(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", source))


def registered(kind: str) -> set[str]:
    """The registered names of a plug-in kind (``kwta-robust plugins KIND``)."""
    return set(KINDS[kind].registry().names())


def section(text: str, start: str, end: str) -> str:
    """The part of ``text`` from the line holding ``start`` up to the next ``end`` after it."""
    begin = text.index(start)
    return text[begin:text.index(end, begin + len(start))]


def spans(text: str) -> list[str]:
    """The inline code spans of a text."""
    return [match.group(1) for match in SPAN.finditer(text)]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``header``, as cells (``\\|`` kept
    inside a cell)."""
    lines = text[text.index(header):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def options() -> Options:
    """:func:`parser_options`, built once for this module's tests."""
    return parser_options()


# --- the checkers on small texts -------------------------------------------------------------------------------

OPTIONS: Options = MappingProxyType({"evaluate": frozenset({"--config", "--out", "-h"}),
                                     "table": frozenset({"--protocol", "--format"})})


def test_a_bogus_option_is_reported_in_a_block_a_continuation_and_a_span() -> None:
    text = ("```bash\nkwta-robust evaluate a.pt --config q.yaml \\\n"
            "    --bogus 3 --out r.json  # --not-an-option\n```\n"
            "Then `table --protocol --wrong` and `kwta-robust evaluate --config x --also-wrong`.\n")
    assert option_problems(command_lines(text), OPTIONS) == [
        "README.md:2: kwta-robust evaluate has no option --bogus",
        "README.md:5: kwta-robust table has no option --wrong",
        "README.md:5: kwta-robust evaluate has no option --also-wrong"]


def test_an_option_of_another_sub_command_and_an_unknown_sub_command_are_reported() -> None:
    text = "```bash\nkwta-robust table runs/*.json --out t.md && kwta-robust evalute a.pt\n```\n"
    assert option_problems(command_lines(text), OPTIONS) == [
        "README.md:2: kwta-robust table has no option --out",
        "README.md:2: kwta-robust evalute: no such sub-command"]


def test_prose_and_python_are_not_commands() -> None:
    text = ("`error: runs/x.json is in use by another kwta-robust run (pid 1)` and `train.threads`\n"
            "```python\nrun('kwta-robust evaluate --nope')\n```\n")
    assert command_lines(text) == []


def test_a_clean_text_has_no_problems_and_stray_options_are_found() -> None:
    text = "```bash\nkwta-robust evaluate a.pt --config q.yaml --out r.json\n```\nsee `--format` and `--bogus`\n"
    assert option_problems(command_lines(text), OPTIONS) == []
    assert stray_options(text, OPTIONS, {"--clock"}) == ["--bogus"]


def test_a_bogus_option_put_into_the_readme_is_caught(readme: str, options: Options) -> None:
    marker = "--config eval_configs/mnist5k-full.yaml --out runs/cnn-kwta.json"
    assert marker in readme
    broken = readme.replace(marker, marker + " --no-such-option", 1)
    problems = option_problems(command_lines(broken), options)
    assert len(problems) == 1 and "kwta-robust evaluate has no option --no-such-option" in problems[0]


# --- the README -----------------------------------------------------------------------------------------------


def test_the_parser_is_read(options: Options) -> None:
    assert set(options) == set(COMMANDS) and "--shards" in options["evaluate"] and "--protocol" in options["table"]


def test_every_command_line_of_the_readme_takes_its_options(readme: str, options: Options) -> None:
    commands = command_lines(readme)
    assert len(commands) >= 30 and {c.command for c in commands} == set(COMMANDS)
    assert option_problems(commands, options) == []


def test_every_command_in_a_config_comment_takes_its_options(options: Options) -> None:
    commands = [c for path in sorted((ROOT / "eval_configs").glob("*.yaml"))
                for c in config_command_lines(path.read_text(encoding="utf-8"), f"eval_configs/{path.name}")]
    assert len(commands) >= 5
    assert option_problems(commands, options) == []


def test_every_option_the_readme_names_exists_somewhere(readme: str, options: Options) -> None:
    benchmarks = benchmark_options()
    assert {"--seeds", "--repeats", "--clock"} <= benchmarks
    assert stray_options(readme, options, benchmarks | set(OTHER_PROGRAMS)) == []


def test_the_attacks_table_is_the_registry(readme: str) -> None:
    rows = table_rows(readme, "| family (file) | registered names |")
    names: set[str] = set()
    surrogates: set[str] = set()
    for family, cell in rows:
        for path in re.findall(r"`([\w/]+\.py)`", family):
            assert (ROOT / path).is_file(), f"Attacks table: {path} does not exist"
        for code in spans(cell):
            if code.startswith("surrogate:"):
                surrogates |= {s.strip() for s in code.partition(":")[2].replace("\\|", "|").split("|")}
            else:
                names.add(code)
    attacks, probes = registered("attacks"), registered("noise-probes")
    assert names - attacks - probes == set(), "README names attacks or noise probes that are not registered"
    assert attacks | probes <= names, f"registered but not in the README's table: {sorted(attacks | probes - names)}"
    assert surrogates == registered("surrogates")


def test_suites_formats_executors_and_plugin_groups_are_the_registered_ones(readme: str) -> None:
    from attacks.suites import SUITES

    assert set(spans(re.search(r"named suite: (.*?)\), the noise", readme, re.S).group(1))) == set(SUITES)
    first, others = re.search(r"--format (\w+) +# or ([\w, ]+)", readme).groups()
    assert {first, *others.replace(",", " ").split()} == registered("formats")
    executors = re.search(r"one file per executor: ([\w, ]+)\)", readme).group(1)
    assert set(executors.replace(",", " ").split()) == registered("executors")
    groups = {row[0].strip("`") for row in table_rows(readme, "| group | what the entry point names |")}
    assert groups == {kind.group for kind in KINDS.values()}


def test_every_flag_the_readme_names_is_one_the_code_raises(readme: str) -> None:
    flags_text = section(readme, "Diagnostics (Carlini et al. 2019", "### Randomized models")
    named = {code for code in spans(flags_text) if re.fullmatch(r"[a-z]+(?:-[a-z0-9]+)+", code)}
    checks = registered("diagnostics")
    assert checks <= set(spans(readme)), f"checks the README never names: {sorted(checks - set(spans(readme)))}"
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "kwta_robust").rglob("*.py")))
    unknown = {flag for flag in named - checks - registered("attacks")
               if f'"{flag}"' not in source and f"'{flag}'" not in source}
    assert len(named) >= 20 and unknown == set()


def test_named_data_sets_and_architectures_are_registered(readme: str) -> None:
    datasets = set(re.findall(r"`dataset: ([a-z0-9-]+)`|--dataset ([a-z0-9-]+)", readme))
    assert {d for pair in datasets for d in pair if d} <= registered("datasets")
    models = re.search(r"in the model registry as\s+(.*?)\.\s", readme, re.S).group(1)
    assert set(spans(models)) <= registered("architectures") and len(spans(models)) == 4
    arches = {a for c in command_lines(readme) for a in re.findall(r"--arch ([\w-]+)", c.words)}
    assert arches and arches <= registered("architectures")


def _config_loader(data: Mapping[str, object]) -> type:
    """The config class a shipped YAML is: a sweep (``grid``), a training recipe (``arch``) or an evaluation."""
    from kwta_robust.config import EvalConfig
    from kwta_robust.sweep.config import SweepConfig
    from kwta_robust.training import TrainConfig

    if "grid" in data:
        return SweepConfig
    return TrainConfig if "arch" in data or "activation" in data else EvalConfig


def test_every_config_the_readme_names_exists_and_loads(readme: str) -> None:
    named = set(re.findall(r"eval_configs/([\w-]+\.yaml)", readme))
    table = {code for row in table_rows(readme, "| file | what |") for code in spans(row[0])}
    assert {"quick.yaml", "quickstart.yaml", "mnist5k-full.yaml"} <= table
    for name in sorted(named | table):
        path = ROOT / "eval_configs" / name
        assert path.is_file(), f"README names eval_configs/{name}, which does not exist"
        loader = _config_loader(yaml.safe_load(path.read_text(encoding="utf-8")))
        assert loader.from_yaml(path) is not None


def test_every_repository_path_named_exists(readme: str) -> None:
    texts = {"README.md": readme, **{f"eval_configs/{p.name}": p.read_text(encoding="utf-8")
                                     for p in sorted((ROOT / "eval_configs").glob("*.yaml"))}}
    missing = []
    for name, text in texts.items():
        candidates = spans(text) if name == "README.md" else re.findall(r"[\w./-]+", text)
        for path in candidates:
            path = path.rstrip(".,:")
            if REPO_PATH.match(path) and "NAME" not in path and not (ROOT / path).exists():
                missing.append(f"{name}: {path}")
    assert missing == []


def test_the_parser_builder_is_the_clis() -> None:
    parser, _ = build_parser(["evaluate"])
    assert isinstance(parser, argparse.ArgumentParser) and "--config" in \
        parser.command_parsers["evaluate"]._option_string_actions


def resolve(name: str) -> object:
    """The object a dotted Python name (``kwta_robust.data.TensorData``) or a factory (``pkg.mod:fn``) names."""
    import importlib

    module_name, _, attribute = name.partition(":")
    parts = module_name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in [*parts[cut:], *([attribute] if attribute else [])]:
            obj = getattr(obj, part)
        return obj
    raise ModuleNotFoundError(name)


def test_every_python_name_the_readme_gives_resolves(readme: str) -> None:
    groups = {kind.group for kind in KINDS.values()}
    names = {m.group(1) for code in spans(readme)
             if (m := re.match(r"((?:kwta_robust|attacks)\.[\w.]+(?::\w+)?)", code)) and m.group(1) not in groups}
    assert len(names) >= 10
    for name in sorted(names):
        assert resolve(name) is not None, name
    assert [code for code in spans(readme) if code.startswith("diagnostics.")]
    from kwta_robust.specs import DiagnosticsSpec

    for code in spans(readme):
        if code.startswith("diagnostics."):
            assert code.split(".")[1] in DiagnosticsSpec.__dataclass_fields__, code


def quoted_defaults() -> list[tuple[str, object]]:
    """``(pattern, the code's value)``: each pattern finds, in the README, the number it quotes for that default."""
    from kwta_robust.config import EvalConfig
    from kwta_robust.diagnostics_base import Thresholds
    from kwta_robust.randomness import AUTO_DRAWS
    from kwta_robust.specs import BudgetCheckSpec, DiagnosticsSpec
    from kwta_robust.sweep.executors.ray import DEFAULT_MAX_RETRIES
    from kwta_robust.training import TrainConfig

    fields = EvalConfig.__dataclass_fields__
    check = BudgetCheckSpec()
    return [
        (r"more than `zero_gradient_fraction`, (\d+)%", round(100 * Thresholds().zero_gradient_fraction)),
        (r"under the (\d+)-point margin", round(100 * Thresholds().ladder_margin)),
        (r"\(`closest: ([\d.]+)`\)", check.closest),
        (r"at most `samples` \((\d+)\)", check.samples),
        (r"re-runs the strongest attacks at (\d)× their budget", check.factor),
        (r"the default `batch_size: (\d+)`", fields["batch_size"].default),
        (r"the plurality of (\d+) draws", AUTO_DRAWS),
        (r"run on up to (\d+) inputs", DiagnosticsSpec().gradient_batch),
        (r"`max_retries` times, (\d+) by\s+default", DEFAULT_MAX_RETRIES),
        (r"`train.threads` \(default (\d+)\)", TrainConfig.__dataclass_fields__["threads"].default),
    ]


def attack_defaults_quoted() -> list[tuple[str, object]]:
    """``(pattern, the attack's default)`` for the attack budgets the README quotes."""
    from attacks.base import create_attack
    from attacks.settings import attack_settings

    def default(attack: str, key: str) -> object:
        return attack_settings(create_attack(attack, seed=0), {})[key]

    return [
        *[(r"AutoAttack reference budgets \((\d+) iterations", default(a, "steps"))
          for a in ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")],
        *[(r"iterations, (\d+) target classes", default(a, "n_target_classes")) for a in ("apgd-t", "fab-t")],
        (r"target classes, ([\d,]+) queries\)", default("square", "n_queries")),
        (r"with its default (\d+) Adam", default("cw", "steps")),
    ]


def test_the_defaults_the_readme_quotes_are_the_codes(readme: str) -> None:
    for pattern, value in [*quoted_defaults(), *attack_defaults_quoted()]:
        match = re.search(pattern, readme)
        assert match, f"README no longer says {pattern!r}"
        assert float(match.group(1).replace(",", "")) == value, f"README: {match.group(0)!r}, the code: {value}"


def test_the_settings_the_readme_shows_are_what_the_quickstart_suite_builds(readme: str) -> None:
    import json

    from attacks.base import create_attack
    from attacks.settings import attack_settings

    block = re.search(r"^pgd +params .*?^```", readme, re.S | re.M).group(0)
    joined = re.sub(r"\n +", " ", block)
    pgd = json.loads(re.search(r"^pgd +params +\{.*?\} +settings (\{.*?\})$", joined, re.M).group(1))
    assert pgd == attack_settings(create_attack("pgd", seed=0, steps=10, loss="ce"), {"steps": 10, "loss": "ce"})
    transfer = json.loads(re.search(r"^transfer .*? settings (\{.*\})$", joined, re.M).group(1))
    assert transfer == {"inner": {"attack": "pgd", **attack_settings(create_attack("pgd", seed=0), {})}}
    params = yaml.safe_load((ROOT / "eval_configs" / "quickstart.yaml").read_text())["attacks"][1]["params"]
    bpda = attack_settings(create_attack("bpda", seed=0, **params), params)
    shown = re.search(r"^bpda-smooth +settings (.*)$", joined, re.M).group(1)
    assert json.loads(re.search(r'"stage_keep": (\[.*?\])', shown).group(1)) == bpda["stage_keep"]
    assert json.loads(re.search(r'"inner": \[(\{.*?\})', shown).group(1)) == bpda["inner"][0]
    assert shown.startswith('{"surrogate": "smooth", "temperatures": [0.05, {"log_uniform": [0.02, 0.1]}')
    assert bpda["temperatures"][:2] == [0.05, {"log_uniform": [0.02, 0.1]}] and len(bpda["inner"]) == 4


def test_the_protocol_table_has_the_columns_the_readme_shows(readme: str, capsys: pytest.CaptureFixture) -> None:
    from kwta_robust.cli import main

    shown = re.search(r"^\$ kwta-robust table --protocol .*?\n\n(\| model .*?)\n", readme, re.S | re.M).group(1)
    records = sorted(str(p) for p in (ROOT / "tests" / "fixtures" / "quickstart").glob("*.json"))
    assert len(records) == 2 and main(["table", "--protocol", *records]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.split("|")] == [c.strip() for c in shown.split("|")]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings (outside fenced blocks)."""
    prose = FENCE.sub("", markdown)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.*)$", prose, re.M)}


def test_slugs_are_githubs() -> None:
    assert slug("1. Evaluate a checkpoint against the suite") == "1-evaluate-a-checkpoint-against-the-suite"
    assert slug("Scale-out (issue 12)") == "scale-out-issue-12"
    assert slug("What a record holds, and the flags") == "what-a-record-holds-and-the-flags"


def test_every_link_of_the_readme_leads_somewhere(readme: str) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        if not file.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(target)
    assert broken == []
