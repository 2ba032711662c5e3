"""The README's bench chart: an SVG drawn from the judged rows, no library, no CDN.

One group per burst phase, one bar per side: the median tasks/s over the pairs, a whisker
from the slowest to the fastest pair (the spread the verdict is judged on), and the ratio of
the medians spectask/raw above each group. Plain SVG text, so the README shows it anywhere,
offline included. `python -m bench.chart [latest.json] [out.svg]` redraws it from a saved run.
"""

from __future__ import annotations

import json
import math
import sys
from html import escape
from pathlib import Path
from typing import Any

from bench.phases import RAW, SIDES, SPECTASK, THROUGHPUT

COLOURS = {"raw": "#8c8c8c", "spectask": "#2b6cb0", "raw-transient": "#d69e2e"}
WIDTH, HEIGHT = 760, 340
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 40, 70
BAR, GAP = 26, 6


def _groups(phases: dict[str, Any]) -> list[tuple[str, dict[str, Any], float]]:
    groups = []
    for name, rows in phases.items():
        row = rows.get(THROUGHPUT.key)
        if row is not None:
            groups.append((name, row["sides"], row["ratio_of_medians"]))
    return groups


def _nice_top(value: float) -> float:
    if not value > 0 or math.isnan(value):
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * step:
            return float(factor * step)
    return float(10 * step)


def render_svg(phases: dict[str, Any], subtitle: str) -> str:
    """The chart as an SVG document (text)."""
    groups = _groups(phases)
    highest = max(
        (side["max"] for _, sides, _ in groups for side in sides.values() if side["max"] > 0),
        default=1.0,
    )
    top = _nice_top(highest)
    plot_h = HEIGHT - TOP - BOTTOM
    group_w = (WIDTH - LEFT - RIGHT) / max(1, len(groups))

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top) / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">make bench: end-to-end '
        "tasks/s with results (median, whisker = slowest to fastest pair)</text>",
        f'<text x="{LEFT}" y="33" fill="#555">{escape(subtitle)}</text>',
    ]
    for tick in range(5):
        value = top * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'stroke="#e2e2e2"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.0f}</text>'
        )
    for index, (name, sides, ratio) in enumerate(groups):
        shown = [side for side in SIDES if side in sides]
        width = len(shown) * BAR + (len(shown) - 1) * GAP
        x0 = LEFT + index * group_w + (group_w - width) / 2
        for position, side in enumerate(shown):
            cell = sides[side]
            x = x0 + position * (BAR + GAP)
            median = cell["median"] if not math.isnan(cell["median"]) else 0.0
            parts.append(
                f'<rect x="{x:.1f}" y="{y(median):.1f}" width="{BAR}" '
                f'height="{TOP + plot_h - y(median):.1f}" fill="{COLOURS[side]}"/>'
            )
            if cell["max"] > cell["min"]:
                middle = x + BAR / 2
                parts.append(
                    f'<line x1="{middle:.1f}" x2="{middle:.1f}" y1="{y(cell["min"]):.1f}" '
                    f'y2="{y(cell["max"]):.1f}" stroke="black"/>'
                )
        label_x = x0 + width / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(name)}</text>"
        )
        if not math.isnan(ratio) and SPECTASK in sides and RAW in sides:
            parts.append(
                f'<text x="{label_x:.1f}" y="{HEIGHT - BOTTOM + 30}" text-anchor="middle" '
                f'fill="#2b6cb0">spectask/raw {ratio:.2f}</text>'
            )
    legend_x = LEFT
    for side in SIDES:
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 22}" width="12" height="12" '
            f'fill="{COLOURS[side]}"/>'
        )
        parts.append(f'<text x="{legend_x + 16}" y="{HEIGHT - 12}">{side}</text>')
        legend_x += 130
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def subtitle(document: dict[str, Any]) -> str:
    load = document.get("load_average", {})
    config = document.get("config", {})
    start = " ".join(f"{value:.2f}" for value in load.get("start", []))
    end = " ".join(f"{value:.2f}" for value in load.get("end", []))
    return (
        f"run {document.get('run_id', '?')}: {config.get('pairs', '?')} pair(s) of "
        f"{config.get('tasks', '?')}-task bursts; load average {start} at the start, {end} at "
        f"the end on {document.get('environment', {}).get('cpus', '?')} CPUs"
    )


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_svg(document["phases"], subtitle(document)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else Path(__file__).parent / "results" / "latest.json"
    target = Path(args[1]) if len(args) > 1 else Path(__file__).parents[1] / "docs" / "bench.svg"
    try:
        document = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench chart: cannot read {source}: {exc}; run `make bench` first", file=sys.stderr)
        return 1
    write(target, document)
    print(f"written {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
