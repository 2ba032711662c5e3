"""The chaos table: one row per fault, printed at the end of the run and failing on a bad row."""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = (
    "fault",
    "confirmed",
    "succeeded",
    "lost",
    "duplicate executions",
    "duplicate results",
    "recovery s",
    "drain s",
    "slowest exit s",
    "verdict",
)


@dataclass
class Row:
    """What one fault did to one batch; `failures` empty means the row passed."""

    fault: str
    confirmed: int = 0
    succeeded: int = 0
    lost: int = 0
    duplicate_executions: int = 0
    duplicate_results: int = 0
    recovery: float | None = None  # worst over the row's faults
    drain: float | None = None
    slowest_exit: float | None = None  # after SIGTERM, of every process of the batch
    failures: list[str] = field(default_factory=list)

    def cells(self) -> tuple[str, ...]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        verdict = "ok" if not self.failures else "FAIL: " + "; ".join(self.failures)
        return (
            self.fault,
            str(self.confirmed),
            str(self.succeeded),
            str(self.lost),
            str(self.duplicate_executions),
            str(self.duplicate_results),
            seconds(self.recovery),
            seconds(self.drain),
            seconds(self.slowest_exit),
            verdict if len(verdict) < 160 else verdict[:157] + "...",
        )


def render(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pastes into an issue as is)."""
    body = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "| " + " | ".join([*padded, cells[-1]]) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|---|"
    return "\n".join([line(COLUMNS), rule, *(line(cells) for cells in body[1:])])
