"""The one renderer of the pipeline's tables: Markdown, LaTeX (booktabs) and CSV text from rows of cells.

Every table module (report, verdicts, comparisons, sanity, the split counts) builds its
rows and captions and leaves the syntax to these functions, so a format is written once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

LEFT, RIGHT, CENTRE = ":--", "--:", ":-:"
# CSV numbers: six significant digits, enough for every quantity the tables hold.
FLOAT_FORMAT = "%.6g"


def markdown_table(
    header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence[str]], *, padded_rule: bool = True
) -> list[str]:
    """The lines of a Markdown table: header, rule (`align`: LEFT, RIGHT or CENTRE per column), rows.

    `padded_rule=False` writes the rule without spaces (`|---|--:|`).
    """
    rule = "| " + " | ".join(align) + " |" if padded_rule else "|" + "|".join(align) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(*blocks: str | Sequence[str]) -> str:
    """A Markdown page from lines and lists of lines, newline-terminated."""
    lines = [line for block in blocks for line in ([block] if isinstance(block, str) else block)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
}


def tex(text: str) -> str:
    """Escape LaTeX special characters; ± becomes math."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace("±", r"$\pm$")


def latex_table(caption: str, label: str, columns: str, header: Sequence[str], body: Sequence[str]) -> str:
    """A booktabs table: `columns` the tabular spec, `header` escaped cells, `body` finished lines (rows, rules)."""
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{tex(caption)}}}",
        rf"\label{{tab:{label}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def latex_row(cells: Sequence[str]) -> str:
    """One tabular row of finished cells."""
    return " & ".join(cells) + r" \\"


def csv_text(frame: pd.DataFrame, float_format: str | None = FLOAT_FORMAT) -> str:
    """A frame as CSV text, without its index."""
    return frame.to_csv(index=False, float_format=float_format)


def percent(level: float) -> str:
    """A confidence level as the tables print it: 0.95 → "95 %"."""
    return f"{100 * level:.0f} %"


def p_text(p: float) -> str:
    """A p-value as the tables print it: three significant digits, scientific below 0.001, — for none."""
    return "—" if math.isnan(p) else f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"
