"""Fixed-width text tables, as the evaluation summaries print them.

>>> print(format_table(["task", "AP"], [["bbox", 41.237], ["segm", None]], [6, 7], fmt=".2f"))
task       AP
bbox    41.24
segm        -
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def format_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    widths: Sequence[int],
    *,
    fmt: str = "",
    missing: str = "-",
    align: str | None = None,
    rule: str = "",
) -> str:
    """The header line and one line per row, joined by newlines (no trailing newline).

    Every cell is padded to its column's width (a longer cell is kept whole and pushes the rest of
    its line right), with no separator between columns: ``widths`` include the spacing.

    Args:
        header: one title per column.
        rows: one sequence of cells per row, as many as ``header``. A ``str`` cell is printed as
            is, ``None`` as ``missing``, anything else through ``format(cell, fmt)``.
        widths: each column's width in characters.
        fmt: the format spec of non-string cells, e.g. ``".3f"``.
        missing: the text of a ``None`` cell.
        align: one ``"<"`` (left) or ``">"`` (right) per column; default: the first column left,
            the others right.
        rule: a character repeated under the header, as long as the header line ("": none).

    Raises:
        ValueError: a row, ``widths`` or ``align`` does not have one entry per column.
    """
    n = len(header)
    align = "<" + ">" * (n - 1) if align is None else align
    if len(widths) != n or len(align) != n or set(align) - {"<", ">"}:
        raise ValueError(f"format_table: {n} columns need {n} widths and {n} of '<' or '>'")

    def line(cells: Sequence[object]) -> str:
        if len(cells) != n:
            raise ValueError(f"format_table: a row of {len(cells)} cells in a table of {n} columns")
        texts = (
            c if isinstance(c, str) else missing if c is None else format(c, fmt) for c in cells
        )
        return "".join(f"{t:{a}{w}}" for t, a, w in zip(texts, align, widths))

    head = line(header)
    return "\n".join([head, *([rule * len(head)] if rule else []), *(line(r) for r in rows)])
