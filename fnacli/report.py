"""What a step's result says to a person: its ``report()``, an ordered list of text lines and
plain tables. The CLI prints a report on stderr (tables drawn by rich, ``fnacli.cli.common.
show``); in a notebook ``print(*result.report(), sep="\\n")`` shows the same as plain text.

Kept free of torch and rich: results build their reports without either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Table:
    """A titled table of text cells; ``right`` columns are right-aligned, ``dim`` ones drawn
    dim on a terminal; the title (and caption) left-justified unless ``centred``."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    right: tuple[str, ...] = ()
    caption: str | None = None
    centred: bool = False
    dim: tuple[str, ...] = ()

    def __str__(self) -> str:
        widths = [max([len(col), *(len(row[i]) for row in self.rows if i < len(row))])
                  for i, col in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(cell.rjust(w) if col in self.right else cell.ljust(w)
                             for col, cell, w in zip(self.columns, cells, widths,
                                                     strict=False)).rstrip()

        total = sum(widths) + 2 * (len(widths) - 1)

        def over(text: str) -> str:
            return text.center(total).rstrip() if self.centred else text

        lines = [over(self.title), line(self.columns), line(["-" * w for w in widths]),
                 *(line(row) for row in self.rows)]
        if self.caption:
            lines.append(over(self.caption))
        return "\n".join(lines)


# A result's report: lines and tables in the order they are shown.
Report = list[str | Table]


def report_text(report: Report) -> str:
    """A report as plain text, one line (or table) after the other."""
    return "\n".join(map(str, report))


def format_madds(v: float) -> str:
    """A MAdds count as people write it: ``316.4M``, ``1.23G``."""
    return f"{v / 1e9:.3g}G" if v >= 1e9 else f"{v / 1e6:.4g}M"
