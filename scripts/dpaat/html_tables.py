"""A results table's Markdown (dpaat.report, claims, sanity) as a small HTML page the Snakemake report shows inline.

The Markdown writers already put the bold best cells, the intervals and the caption into the
table; this renders the subset they use (paragraphs, headings, lists, pipe tables with
alignment, **bold**, *italic*, `code`) so a reader sees the same table in the browser,
where the report's viewer only offers a CSV for download. No torch and no pandas here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
p { max-width: 70em; line-height: 1.4; }
code { font-size: 90%; background: #f4f4f4; padding: 0 0.2em; }
"""

_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
)


def inline(text: str) -> str:
    """Markdown's inline marks as HTML, everything else escaped."""
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") else line
    return [cell.strip() for cell in line.split("|")]


def _table(lines: list[str]) -> str:
    header, rule, *rows = lines
    numeric = [cell.endswith(":") and not cell.startswith(":") for cell in _cells(rule)]

    def row(cells: Iterable[str], tag: str) -> str:
        parts = [
            f'<{tag}{" class=num" if numeric[i] else ""}>{inline(cell)}</{tag}>'
            for i, cell in enumerate(list(cells)[: len(numeric)])
        ]
        return "<tr>" + "".join(parts) + "</tr>"

    body = "\n".join(row(_cells(line), "td") for line in rows)
    return f"<table>\n<thead>{row(_cells(header), 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _block(lines: list[str]) -> str:
    if len(lines) >= 2 and lines[0].lstrip().startswith("|") and re.fullmatch(r"[\s|:\-]+", lines[1]):
        return _table(lines)
    if lines[0].startswith("#"):
        level = min(len(lines[0]) - len(lines[0].lstrip("#")) + 1, 6)
        heading = f"<h{level}>{inline(lines[0].lstrip('#').strip())}</h{level}>"
        return heading + ("\n" + _block(lines[1:]) if lines[1:] else "")
    if all(line.lstrip().startswith(("- ", "* ")) for line in lines):
        return "<ul>" + "".join(f"<li>{inline(line.lstrip()[2:])}</li>" for line in lines) + "</ul>"
    return f"<p>{inline(' '.join(line.strip() for line in lines))}</p>"


def markdown_page(text: str, title: str) -> str:
    """A standalone HTML page of one Markdown table file (blocks separated by blank lines)."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    body = "\n".join(_block(block) for block in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
