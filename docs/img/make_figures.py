"""Draw the remapping pictures of docs/remapping-figures.md as SVG files in this folder.

    python docs/img/make_figures.py          # rewrites docs/img/remap-*.svg

Pure Python (SVG is written as text), so it runs without torch or any plotting package.
The rules drawn here are small re-statements of fnacli.remap's; tests/test_docs.py checks
them against the real code (``remap_kernel``, ``select_channels``, ``remap_state``'s
``sources``) and checks that the committed SVGs equal this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
INK, MUTED, ZERO_FILL, ACCENT = "#222222", "#777777", "#eeeeee", "#c0392b"

# The example channel scores of the width picture (|γ| of a BN layer, 8 seed channels).
GAMMAS = (0.9, 0.2, 1.4, 0.5, 0.05, 1.1, 0.7, 0.3)


# ---- the rules (the same as fnacli.remap; the tests hold them to it) ------------------------

def kernel_taps(k0: int, k: int, rule: str = "center") -> list[tuple[int, int]]:
    """Where the seed's k0×k0 taps land in a larger k×k kernel, in the seed's row-major order."""
    if rule == "dilate" and k0 > 1 and (k - 1) % (k0 - 1) == 0:
        pos = [i * ((k - 1) // (k0 - 1)) for i in range(k0)]
    else:  # centre; also dilate's fallback when the grid step is not whole (5 -> 7)
        pos = [(k - k0) // 2 + i for i in range(k0)]
    return [(r, c) for r in pos for c in pos]


def depth_sources(seed_layers: int, new_layers: int) -> list[int]:
    """The seed layer each new layer of a stage copies: min(i, l - 1)."""
    return [min(i, seed_layers - 1) for i in range(new_layers)]


def kept_channels(scores: tuple[float, ...], n: int, rule: str) -> list[int]:
    """Seed channels kept when narrowing to n, ascending: the first n, or the n best scores
    (ties to the lower index)."""
    if rule == "first" or n >= len(scores):
        return list(range(min(n, len(scores))))
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n]
    return sorted(best)


# ---- a tiny SVG writer ----------------------------------------------------------------------

def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, width: int, height: int, title: str) -> None:
        self.width, self.height, self.title = width, height, title
        self.items: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, stroke: str = INK,
             dash: bool = False, width: float = 1.0) -> None:
        extra = ' stroke-dasharray="5,3"' if dash else ""
        self.items.append(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" '
                          f'fill="{fill}" stroke="{stroke}" stroke-width="{width:g}"{extra}/>')

    def text(self, x: float, y: float, s: str, size: int = 13, anchor: str = "middle",
             color: str = INK, bold: bool = False) -> None:
        weight = ' font-weight="bold"' if bold else ""
        self.items.append(f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}" '
                          f'fill="{color}"{weight}>{_esc(s)}</text>')

    def arrow(self, x1: float, y1: float, x2: float, y2: float, color: str = INK) -> None:
        self.items.append(f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" '
                          f'stroke="{color}" stroke-width="1.4" marker-end="url(#arrow)"/>')

    def render(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
                f'font-family="{FONT}">\n'
                f'<title>{_esc(self.title)}</title>\n'
                '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
                'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
                f'<path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>\n'
                f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>\n')
        return head + "\n".join(self.items) + "\n</svg>\n"


def _colour(i: int, n: int) -> str:
    return f"hsl({round(360 * i / n)}, 65%, 72%)"


# ---- the figures ----------------------------------------------------------------------------

TAP_NAMES = "abcdefghi"


def _kernel(svg: Svg, x: float, y: float, k: int, taps: list[tuple[int, int]], cell: int,
            label: str, crop: int = 0) -> None:
    """A k×k kernel with the seed's taps coloured (a..i) and every other tap 0."""
    where = {pos: i for i, pos in enumerate(taps)}
    for r in range(k):
        for c in range(k):
            i = where.get((r, c))
            cx, cy = x + c * cell, y + r * cell
            svg.rect(cx, cy, cell, cell, _colour(i, len(taps)) if i is not None else ZERO_FILL,
                     stroke="#999999")
            svg.text(cx + cell / 2, cy + cell / 2 + 4, TAP_NAMES[i] if i is not None else "0",
                     size=12, color=INK if i is not None else MUTED, bold=i is not None)
    if crop:  # the centre crop a smaller kernel would take
        o = (k - crop) // 2
        svg.rect(x + o * cell - 2, y + o * cell - 2, crop * cell + 4, crop * cell + 4, "none",
                 stroke=ACCENT, dash=True, width=2)
    svg.text(x + k * cell / 2, y + k * cell + 18, label, size=13)


def _kernel_figure(rule: str) -> Svg:
    cell, top = 24, 56
    title = {"center": "--kernel center: the seed kernel in the centre, zeros around",
             "dilate": "--kernel dilate: the seed taps on a dilated grid, zeros between"}[rule]
    svg = Svg(640, 310, title)
    svg.text(320, 26, title, size=14, bold=True)
    x3, x5, x7 = 30, 190, 400
    _kernel(svg, x3, top + 2 * cell, 3, kernel_taps(3, 3), cell, "seed 3×3")
    crop = 3 if rule == "center" else 0
    _kernel(svg, x5, top + cell, 5, kernel_taps(3, 5, rule), cell, "5×5", crop=crop)
    _kernel(svg, x7, top, 7, kernel_taps(3, 7, rule), cell, "7×7", crop=crop)
    mid = top + 3.5 * cell
    svg.arrow(x3 + 3 * cell + 12, mid, x5 - 12, mid)
    svg.arrow(x5 + 5 * cell + 12, mid, x7 - 12, mid)
    if rule == "center":
        notes = ["Larger: function-preserving ('same' padding keeps the centre aligned).",
                 "Smaller: the centre crop (dashed: what 5×5 or 7×7 keeps when it becomes 3×3)."]
    else:
        notes = ["3→5 every 2nd position, 3→7 every 3rd; smaller takes the taps on that grid.",
                 "5↔7 has no whole step, so it falls back to center. Not function-preserving."]
    for j, note in enumerate(notes):
        svg.text(20, 272 + 18 * j, note, size=12, anchor="start", color=MUTED)
    return svg


def _stage(svg: Svg, x: float, y: float, n: int, label: str, name: str) -> list[float]:
    """A column of n layer boxes; returns each box's vertical centre."""
    svg.text(x + 45, y - 12, label, size=13, bold=True)
    centres = []
    for i in range(n):
        by = y + i * 44
        svg.rect(x, by, 90, 32, _colour(i, 4), stroke=INK)
        svg.text(x + 45, by + 21, f"{name}{i}", size=13)
        centres.append(by + 16)
    return centres


def _depth_figure() -> Svg:
    svg = Svg(640, 300, "Depth remapping: new layer i copies seed layer min(i, l-1)")
    svg.text(320, 26, "Depth: new layer i copies seed layer min(i, l−1) of the same stage",
             size=14, bold=True)
    for x0, (l_seed, l_new), caption in ((40, (2, 4), "deeper: the last seed layer repeats"),
                                         (360, (4, 2), "shallower: the first layers stay")):
        seed_y = _stage(svg, x0, 70, l_seed, f"seed (l = {l_seed})", "L")
        new_y = _stage(svg, x0 + 150, 70, l_new, f"new ({l_new} layers)", "L")
        for i, j in enumerate(depth_sources(l_seed, l_new)):
            svg.arrow(x0 + 92, seed_y[j], x0 + 148, new_y[i])
        svg.text(x0 + 120, 268, caption, size=12, color=MUTED)
    svg.text(320, 290, "fnacli remap's table prints these sources per stage, e.g. L0 L1 L1 L1",
             size=12, color=MUTED)
    return svg


def _channels(svg: Svg, x: float, y: float, ids: list[int | None], cell: int = 34,
              scores: bool = False) -> list[float]:
    """A row of channels (None = filled); returns each channel's horizontal centre."""
    centres = []
    for p, i in enumerate(ids):
        cx = x + p * (cell + 6)
        if i is None:
            svg.rect(cx, y, cell, cell, ZERO_FILL, stroke="#999999", dash=True)
            svg.text(cx + cell / 2, y + cell / 2 + 4, "0", size=12, color=MUTED)
        else:
            svg.rect(cx, y, cell, cell, _colour(i, len(GAMMAS)), stroke=INK)
            svg.text(cx + cell / 2, y + cell / 2 + 4, f"c{i}", size=12, bold=True)
        if scores and i is not None:
            h = 34 * GAMMAS[i]
            svg.rect(cx + 6, y - 6 - h, cell - 12, h, "#555555", stroke="none")
            svg.text(cx + cell / 2, y - 10 - h, f"{GAMMAS[i]:g}", size=10, color=MUTED)
        centres.append(cx + cell / 2)
    return centres


def _width_figure() -> Svg:
    svg = Svg(830, 560, "Width remapping: which seed channels a narrower or wider group keeps")
    svg.text(415, 26, "Width: which seed channels a channel group keeps", size=14, bold=True)
    n, cell, x0 = len(GAMMAS), 34, 170
    note_x = x0 + 11 * (cell + 6) + 4
    panels = [
        ("--width first, 8 → 5", kept_channels(GAMMAS, 5, "first"), False,
         ["the first n channels", "(FNA's rule, the default)"]),
        ("--width bn, 8 → 5", kept_channels(GAMMAS, 5, "bn"), True,
         ["the n largest |γ|, kept", "in seed order; std / l1", "rank by the filter"]),
        ("wider, 8 → 11", [*range(n), None, None, None], False,
         ["all seed channels, then", "filled ones: weights 0,", "BN γ=1 β=0 mean 0 var 1",
          "(their output stays 0)"]),
    ]
    top = 60
    for title, kept, bars, notes in panels:
        seed_y = top + (50 if bars else 10)
        svg.text(20, top + 4, title, size=13, anchor="start", bold=True)
        svg.text(20, seed_y + 22, "seed", size=12, anchor="start", color=MUTED)
        seed_x = _channels(svg, x0, seed_y, list(range(n)), scores=bars)
        new_y = seed_y + cell + 46
        svg.text(20, new_y + 22, "new", size=12, anchor="start", color=MUTED)
        new_x = _channels(svg, x0, new_y, kept)
        for p, i in enumerate(kept):
            if i is not None:
                svg.arrow(seed_x[i], seed_y + cell + 2, new_x[p], new_y - 3, color="#888888")
        for j, note in enumerate(notes):
            svg.text(note_x, seed_y + 14 + 16 * j, note, size=12, anchor="start", color=MUTED)
        top = new_y + cell + 34
    return svg


FIGURES = {
    "remap-kernel-center.svg": lambda: _kernel_figure("center"),
    "remap-kernel-dilate.svg": lambda: _kernel_figure("dilate"),
    "remap-depth.svg": _depth_figure,
    "remap-width.svg": _width_figure,
}


def render_all() -> dict[str, str]:
    """File name -> SVG text of every figure."""
    return {name: make().render() for name, make in FIGURES.items()}


def main() -> int:
    for name, text in render_all().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(HERE / name, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
