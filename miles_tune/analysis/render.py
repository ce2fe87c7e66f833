"""Rendering of the analysis tables: Markdown, CSV and LaTeX (booktabs), plus a figure.

A table is a DataFrame from :mod:`miles_tune.analysis.tables`; its ``attrs`` say how to
show it: ``blocks`` (columns that split it into one table per block, such as dataset and
fusion), ``rows`` (the row labels), ``columns`` (``key``, ``header``, ``kind``, ``best``)
and ``notes``. Kinds: ``metric`` (0–1, shown in percent), ``points`` (shown as is),
``int``, ``float``, ``hours``, ``text``. A column with a spread shows ``mean ± std`` from
``key`` and ``key:std``. ``best`` (``max``/``min``) makes the best value of each block bold.
The CSV is the DataFrame itself, unformatted: the numbers to reuse.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DIGITS = {"metric": 1, "points": 1, "float": 1, "hours": 2}


def cell(row: dict[str, Any], column: dict[str, Any]) -> str:
    value = row.get(column["key"])
    kind = column["kind"]
    if kind == "text":
        return "" if value is None or value != value else str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "int":
        return str(int(value))
    if kind == "hours" and 0 < float(value) < 0.005:
        return "<0.01"
    scale = 100.0 if kind == "metric" else 1.0
    digits = DIGITS.get(kind, 2)
    text = f"{scale * float(value):.{digits}f}"
    std = row.get(f"{column['key']}:std")
    n = row.get("n")
    if std is not None and not (isinstance(std, float) and math.isnan(std)) and (n is None or n > 1):
        text += f" ± {scale * float(std):.{digits}f}"
    return text


def blocks(table) -> list[tuple[str, list[dict[str, Any]]]]:  # noqa: ANN001
    """(block title, rows) in order; one untitled block when the table has no block columns."""
    keys = table.attrs.get("blocks", [])
    out: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_dict("records"):
        out.setdefault(" · ".join(str(row[k]) for k in keys), []).append(row)
    return list(out.items())


def shown_columns(table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # noqa: ANN001
    """The columns with a value in at least one of ``rows`` (a dataset's own modalities)."""

    def present(column: dict[str, Any]) -> bool:
        return any(
            r.get(column["key"]) is not None
            and not (isinstance(r.get(column["key"]), float) and math.isnan(r[column["key"]]))
            for r in rows
        )

    return [c for c in table.attrs.get("columns", []) if present(c)]


def bold_cells(rows: list[dict[str, Any]], columns: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """(row index, column key) of each block's best values (ties all bold)."""
    out = set()
    for c in columns:
        if not c.get("best") or len(rows) < 2:
            continue
        scale = 100.0 if c["kind"] == "metric" else 1.0
        digits = DIGITS.get(c["kind"], 2)
        shown = {  # compare what is shown: equal-looking values are equally best
            i: round(scale * float(r[c["key"]]), digits)
            for i, r in enumerate(rows)
            if isinstance(r.get(c["key"]), (int, float)) and math.isfinite(r[c["key"]])
        }
        if len(set(shown.values())) > 1:  # all equal: no best to show
            best = (max if c["best"] == "max" else min)(shown.values())
            out |= {(i, c["key"]) for i, v in shown.items() if v == best}
    return out


def to_markdown(table) -> str:  # noqa: ANN001
    lines = [f"# {table.attrs.get('title', '')}", ""]
    if table.empty:
        return "\n".join([*lines, "No runs for this table.", ""])
    labels = table.attrs.get("rows", [])
    for title, rows in blocks(table):
        columns = shown_columns(table, rows)
        bold = bold_cells(rows, columns)
        if title:
            lines += [f"## {title}", ""]
        lines.append("| " + " | ".join([*labels, *(c["header"] for c in columns)]) + " |")
        lines.append("|" + "---|" * len(labels) + "---:|" * len(columns))
        for i, row in enumerate(rows):
            values = [str(row[k]) for k in labels]
            for c in columns:
                text = cell(row, c)
                values.append(f"**{text}**" if (i, c["key"]) in bold else text)
            lines.append("| " + " | ".join(values) + " |")
        lines.append("")
    lines += [f"{note}" for note in table.attrs.get("notes", [])]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "·": r"$\cdot$", "≈": r"$\approx$"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    out = out.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")
    for symbol, macro in LATEX_SYMBOLS.items():
        out = out.replace(symbol, macro)
    return out


def to_latex(table) -> str:  # noqa: ANN001
    """One booktabs ``tabular`` per block (``\\usepackage{booktabs}``)."""
    out = [f"% {latex_escape(table.attrs.get('title', ''))}"]
    labels = table.attrs.get("rows", [])
    for title, rows in blocks(table):
        columns = shown_columns(table, rows)
        bold = bold_cells(rows, columns)
        if title:
            out.append(f"% {latex_escape(title)}")
        out.append(r"\begin{tabular}{" + "l" * len(labels) + "r" * len(columns) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(latex_escape(h) for h in [*labels, *(c["header"] for c in columns)]) + r" \\")
        out.append(r"\midrule")
        for i, row in enumerate(rows):
            values = [latex_escape(str(row[k])) for k in labels]
            for c in columns:
                text = latex_escape(cell(row, c))
                values.append(rf"\textbf{{{text}}}" if (i, c["key"]) in bold else text)
            out.append(" & ".join(values) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append("")
    out += [f"% {latex_escape(note)}" for note in table.attrs.get("notes", [])]
    return "\n".join(out) + "\n"


def write_table(table, out: Path, name: str) -> list[Path]:  # noqa: ANN001
    """``<name>.md``, ``<name>.csv``, ``<name>.tex`` and ``<name>.png`` in ``out``."""
    from miles_tune.analysis.figures import table_figure

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.md", out / f"{name}.csv", out / f"{name}.tex", out / f"{name}.png"]
    paths[0].write_text(to_markdown(table))
    table.to_csv(paths[1], index=False)
    paths[2].write_text(to_latex(table))
    table_figure(table, paths[3])
    return paths
