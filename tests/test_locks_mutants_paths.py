"""Mutation round on kwta_robust.safe_paths: every character class and length limit of a name, derived names that
stay usable, "inside the folder" that is not a matter of string prefixes, the one-line messages of unusable
outputs, what a file is by its bytes (zip members, leading whitespace, a table's JSON), when an existing file may
be overwritten, and inputs/outputs given twice under different spellings."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from kwta_robust.errors import ConfigError
from kwta_robust.safe_paths import LEGACY_TORCH_MAGIC, REPORT_SUFFIXES, TABLE_SUFFIXES, check_distinct
from kwta_robust.safe_paths import check_inputs_once, check_not_overwriting, check_output_dir, check_output_file
from kwta_robust.safe_paths import check_text_output, child_path, file_kind, is_inside, is_torch_file, safe_name
from kwta_robust.safe_paths import sanitize_name


@pytest.mark.parametrize("name", ["a/b", "a\\b", "a\x00b", "a\x1fb", "a\x7fb", "a\nb"])
def test_separators_and_control_characters_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^--name: .* contains a path separator or a control character; a name "):
        safe_name(name, "--name")


@pytest.mark.parametrize("name, message", [
    ("   ", "--name: expected a non-empty name, got '   '; use letters, digits, '.', '-' and '_'"),
    ("", "--name: expected a non-empty name, got ''; use letters, digits, '.', '-' and '_'"),
    (".", "--name: '.' is not usable as a file name; use letters, digits, '.', '-' and '_'"),
    ("..", "--name: '..' is not usable as a file name; use letters, digits, '.', '-' and '_'"),
    (" a", "--name: ' a' is not usable as a file name; use letters, digits, '.', '-' and '_'"),
    ("a" * 201, "--name: name of 201 characters; use at most 200"),
])
def test_unusable_names_are_refused_with_one_line(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        safe_name(name, "--name")
    assert str(caught.value) == message


def test_the_longest_name_and_dotted_names_pass() -> None:
    for name in ("a" * 200, "...", ".hidden", "v1.2-run_3"):
        assert safe_name(name, "--name") == name


@pytest.mark.parametrize("name, expected", [
    ("a/b\\c\x00d\x7f", "a_b_c_d_"), ("  spaced  ", "spaced"), ("", "model"), (".", "model"), ("..", "model"),
    ("/", "_"), ("x" * 300, "x" * 200),
])
def test_sanitize_name_by_hand(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


def test_a_sanitized_name_cut_at_a_space_is_still_a_safe_name() -> None:
    """A checkpoint stem (or a sweep file's stem) of more than 200 characters with a space at the cut: the derived
    name must be accepted by safe_name (compare's labels and sweep names go through it), not refused for a
    trailing space the user never typed."""
    derived = sanitize_name("a" * 199 + " tail")
    assert derived == "a" * 199
    assert safe_name(derived, "label") == derived


def test_inside_is_by_path_components_not_by_string_prefix(tmp_path) -> None:
    root = tmp_path / "out"
    (tmp_path / "out2").mkdir()
    root.mkdir()
    assert is_inside(root, root)
    assert is_inside(root / "a" / "b.json", root)
    assert not is_inside(tmp_path / "out2" / "x.json", root)
    assert not is_inside(root / ".." / "out2", root)


def test_child_path_refuses_a_link_out_of_the_folder(tmp_path) -> None:
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert child_path(root, "run", "label", ".json") == root / "run.json"
    with pytest.raises(ConfigError, match=rf"^label: 'link' would write {outside} outside {root}; choose another"):
        child_path(root, "link", "label")


def test_output_file_checks_name_the_option_and_the_fix(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    cases = {
        "": "--out: empty path; give a file name or leave the option out",
        str(tmp_path): f"--out: {tmp_path} is a folder; give the path of a file (inside it, for example)",
        str(tmp_path / "afile" / "r.json"):
            f"--out: {tmp_path / 'afile'} is a file, not a folder; choose a path outside it",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            check_output_file(path, "--out")
        assert str(caught.value) == message
    assert check_output_file(tmp_path / "afile", "--out") == tmp_path / "afile"
    assert check_output_file(None, "--out") is None
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json", "--out") == tmp_path / "new" / "deeper" / "r.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the check leaves nothing behind


def test_output_dir_checks(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as caught:
        check_output_dir(tmp_path / "afile", "--out-dir")
    assert str(caught.value) == f"--out-dir: {tmp_path / 'afile'} is a file, not a folder; give a folder path"
    with pytest.raises(ConfigError, match="^--out-dir: empty path; give a folder$"):
        check_output_dir("", "--out-dir")


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("members, kind", [
    ({"run/data.pkl": b"..kwta-robust-checkpoint..", "run/version": b"3"}, "checkpoint"),
    ({"run/data.pkl": b"..pred_clean..indices.."}, "adversarial store"),
    ({"run/data.pkl": b"..kwta-robust-adversarial-store.."}, "adversarial store"),
    ({"run/data.pkl": b"..pred_clean.."}, "torch file"),
    ({"run/data.pkl": b"..indices.."}, "torch file"),
    ({"a.npy": b"x", "b.npy": b"y"}, "NumPy .npz archive"),
    ({"a.npy": b"x", "notes.txt": b"y"}, "zip archive"),
    ({}, "zip archive"),
])
def test_zip_kinds_by_their_members(tmp_path, members: dict[str, bytes], kind: str) -> None:
    path = write_zip(tmp_path / "f.bin", members)
    if not members:  # an archive without members that still starts like one with them (data in front of it)
        path.write_bytes(b"PK\x03\x04" + bytes(26) + path.read_bytes())
    assert file_kind(path) == kind
    assert is_torch_file(path)


def test_legacy_torch_files_and_plain_files(tmp_path) -> None:
    legacy, plain = tmp_path / "old.pt", tmp_path / "plain.pt"
    legacy.write_bytes(LEGACY_TORCH_MAGIC + b"rest")
    plain.write_bytes(b"not torch at all, but long enough")
    assert (is_torch_file(legacy), file_kind(legacy)) == (True, "torch file")
    assert (is_torch_file(plain), file_kind(plain)) == (False, None)


@pytest.mark.parametrize("text, kind", [
    ('\n  {"schema_version": 3}', "record"),
    ('{"format": "kwta-robust-sweep"}', "sweep manifest"),
    ('{ "title": "T", "columns": []}', "table"),
    ('{"note": "title", "columns": []}', None),
    ('{"title": "T"}', None),
    ('[{"title": "T", "columns": []}]', None),
])
def test_json_kinds(tmp_path, text: str, kind: str | None) -> None:
    path = tmp_path / "f.json"
    path.write_text(text)
    assert file_kind(path) == kind


def test_overwriting_another_kind_is_refused_with_its_article(tmp_path) -> None:
    store = write_zip(tmp_path / "adv.pt", {"s/data.pkl": b"kwta-robust-adversarial-store"})
    with pytest.raises(ConfigError) as caught:
        check_not_overwriting(store, "checkpoint", "--out")
    assert str(caught.value) == (f"--out: {store} holds an adversarial store; writing the checkpoint there would "
                                 "destroy it, choose another path")
    unknown = tmp_path / "notes.bin"
    unknown.write_bytes(b"\x00\x01")
    check_not_overwriting(unknown, "checkpoint", "--out")  # not only_own: an unknown file may go
    with pytest.raises(ConfigError) as caught:
        check_not_overwriting(unknown, "checkpoint", "--out", only_own=True)
    assert str(caught.value) == (f"--out: {unknown} holds a file that is not a kwta-robust checkpoint; writing the "
                                 "checkpoint there would destroy it, choose another path (or delete the file first)")


def test_text_outputs_overwrite_only_their_own_kind(tmp_path) -> None:
    report = tmp_path / "REPORT.HTML"
    report.write_text("<html></html>")
    check_text_output(report, "report", REPORT_SUFFIXES, "--out")
    table = tmp_path / "t.json"
    table.write_text('{"title": "T", "columns": ["a"]}')
    check_text_output(table, "table", TABLE_SUFFIXES, "--out")
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    with pytest.raises(ConfigError) as caught:
        check_text_output(config, "table", TABLE_SUFFIXES, "--out")
    assert str(caught.value) == (f"--out: {config} is not a table this command wrote (it overwrites only a file "
                                 "ending in .md/.markdown/.csv/.tex/.txt, or a table in JSON); choose another path "
                                 "(or delete the file first)")
    with pytest.raises(ConfigError) as caught:
        check_text_output(config, "report", REPORT_SUFFIXES, "--out")
    assert str(caught.value) == (f"--out: {config} is not a report this command wrote (it overwrites only a file "
                                 "ending in .html/.htm/.md/.markdown); choose another path (or delete the file "
                                 "first)")


def test_the_same_file_under_two_spellings_is_caught(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    record = tmp_path / "r.json"
    with pytest.raises(ConfigError, match=r"^record 2: the same file as record 1; give each record once$"):
        check_inputs_once([("record 1", tmp_path / "sub" / ".." / "r.json"), ("record 2", record)])
    with pytest.raises(ConfigError, match=r"^--log: .* is also given as --out; the output would overwrite it"):
        check_distinct({"--out": record, "--log": tmp_path / "sub" / ".." / "r.json"})
    with pytest.raises(ConfigError, match=r"^--out: .* is also given as --checkpoint; "):
        check_distinct({"--save": None, "--out": record}, {"--data": None, "--checkpoint": str(record)})
    check_distinct({"--out": record, "--log": tmp_path / "log.json"}, {"--data": None})
