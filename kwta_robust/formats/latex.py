"""``latex``: booktabs ``tabular`` environments (``\\usepackage{booktabs}``), each under its title as a
``\\paragraph`` (the paired comparison's, the protocol's, a record's, a matrix's: the ``### title`` Markdown shows),
accuracies with their interval in ``\\scriptsize``, the notes as an ``itemize`` list; matrices as one table per
matrix after the legend."""

from __future__ import annotations

import re
from typing import Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.formats.base import FORMATS, TableFormat
from kwta_robust.matrix import RobustnessMatrix, legend, matrix_table
from kwta_robust.noise_ci import score_bounds_text
from kwta_robust.numbers import number_text, percent_text
from kwta_robust.report import Cell, Table, cell_text
from kwta_robust.visible_text import visible

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  # text mode's default font encoding prints < > | as other glyphs; these need no package either
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "−": "$-$", "≤": r"$\leq$",
                  "≥": r"$\geq$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, en/em dashes as ``--``/``---``, the minus, comparison
    and times signs as their LaTeX forms (``kwta − relu`` in the paired comparison, ``< 1e-6``) and every line break
    (``\\n``, ``\\r``, form feed, ...) as a space, as Markdown writes them: a blank line in a label was a paragraph
    break, an error in a ``\\paragraph`` title (a matrix's attack), and a table row split over source lines; straight
    quotes as LaTeX's opening and closing quotes (:func:`_quote`).
    Control and bidirectional control characters are written as escapes (:func:`~kwta_robust.visible_text.visible`:
    LaTeX takes most control characters for invalid ones, an error)."""
    text = visible(" ".join(text.splitlines()))
    return "".join(_LATEX_ESCAPES.get(ch) or _quote(text, i) for i, ch in enumerate(text)).replace(
        "–", "--").replace("—", "---")


#: Characters after which a straight quote opens a quotation (``'+' columns``, ``--grid-cell 'kwta=0.25'``).
_OPENING_AFTER = frozenset("([{<=/")


def _quote(text: str, i: int) -> str:
    """The character ``text[i]`` as LaTeX sets it: a straight quote that opens a quotation (at the start, or after
    a space, an opening bracket or ``=``) as LaTeX's opening quote (a backquote, or two for ``"``), a closing ``"``
    as two apostrophes: text mode sets both straight quotes as closing quotes (``'+'`` came out as ’+’). An
    apostrophe (``model's``) and a closing ``'`` stay as they are; any other character is returned unchanged."""
    ch = text[i]
    if ch not in "'\"":
        return ch
    opens = (i == 0 or text[i - 1].isspace() or text[i - 1] in _OPENING_AFTER) and i + 1 < len(text) \
        and not text[i + 1].isspace()
    if ch == '"':
        return "``" if opens else "''"
    return "`" if opens else "'"


def _quoted(text: str) -> str:
    """``text`` with its straight quotes as :func:`latex_escape` writes them (:func:`_quote`), nothing else changed."""
    return "".join(_quote(text, i) for i in range(len(text)))


#: A hyphen-minus that signs a number (``-75.0``, ``-28.1 to -8.5``), not one inside a word or exponent (``apgd-ce``,
#: ``1e-6``, ``2026-12-07``): text mode sets it as a hyphen, shorter than the minus the paper's other numbers have.
_NUMBER_SIGN = re.compile(r"(?<![\w.\-])-(?=\.?\d)")


def _signed(text: str) -> str:
    """``text`` with each number's hyphen-minus written as the minus sign (U+2212), which :func:`latex_escape`
    sets as ``$-$`` as it does the paired comparison's ``kwta − relu``."""
    return _NUMBER_SIGN.sub("\u2212", text)


def _text_first(line: str) -> str:
    """``line`` after a command that reads a leading ``[`` as its optional argument or ``*`` as its star
    (``\\item``, ``\\toprule``, ``\\midrule``, the ``\\\\`` ending the row above): such a start behind ``{}``."""
    return "{}" + line if line.lstrip().startswith(("[", "*")) else line


def _latex_cell(cell: Cell) -> str:
    if cell.percent and is_finite_number(cell.value):
        text = percent_text(cell.value)
        if cell.ci is not None and all(is_finite_number(c) for c in cell.ci):
            text += rf"\,{{\scriptsize[{', '.join(cell.percent_bounds())}]}}"
        return text + latex_escape(cell.mark)
    if isinstance(cell.value, float) and is_finite_number(cell.value) and cell.ci is not None \
            and all(is_finite_number(c) for c in cell.ci):  # a noise score with its interval, as accuracies have it
        low, high = score_bounds_text(*cell.ci)
        return rf"{number_text(cell.value)}\,{{\scriptsize[{low}, {high}]}}" + latex_escape(cell.mark)
    return latex_escape(_signed(cell_text(cell)))


def to_latex(table: Table, spec: str | None = None) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``) under its title (a ``\\paragraph``; none without
    one), notes as a comment-free list below; ``spec``: its column alignments (default: the first column left,
    the last left, the others right)."""
    if spec is None:
        spec = "l" + "r" * (len(table.headers) - 2) + "l" if len(table.headers) > 2 else "l" * len(table.headers)
    lines = [rf"\paragraph{{{latex_escape(table.title)}}}"] if table.title else []
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             _text_first(" & ".join(latex_escape(h) for h in table.headers)) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(_text_first(" & ".join(_latex_cell(c) for c in row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\begin{itemize}")
        lines += [rf"\item {_text_first(latex_escape(n))}" for n in table.notes]
        lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"


@FORMATS.register("latex")
class Latex(TableFormat):
    """booktabs LaTeX tables"""

    name = "latex"
    matrices_file = "matrices.tex"
    paired_after_records = True

    def table(self, table: Table) -> str:
        return to_latex(table)

    def matrices(self, matrices: Sequence[RobustnessMatrix]) -> str:
        head = "\n".join([r"\begin{itemize}", *(rf"\item {_text_first(latex_escape(n))}" for n in legend(matrices)),
                          r"\end{itemize}"]) + "\n"
        # each under its title; row labels left, every accuracy column right-aligned
        tables = [to_latex(matrix_table(m, with_legend=False), spec=f"l{'r' * len(m.sparsities)}") for m in matrices]
        return "\n".join([head, *tables])
