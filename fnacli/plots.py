"""Pictures as plain SVG 1.1 text: α/β probabilities over a search, and an architecture diagram.

No plotting library: the pictures are rectangles, lines and text, so they are written directly
(open them in any browser). Pure Python over the data it is given (a space, JSON records, specs);
torch stays out so that the CLI can import this cheaply.

Search plot: one row per searchable layer (α) and per channel-searched stage (β), one column per
epoch; each cell is a stacked bar whose segments are the candidates' probabilities (a segment is
``p · BAR_H`` tall, so a bar is ``BAR_H`` tall), plus the expected / argmax MAdds per epoch.
The records are the ``"event": "epoch"`` lines of ``SEARCHED.metrics.jsonl``.

Diagram: the architecture top to bottom (stem, a box per layer labelled ``KkEe`` whose width
grows with its output channels, stage separators with stride, the head), optionally beside the
seed's with the differences marked.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from fnacli.errors import UserError
from fnacli.io import atomic_path
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec

BAR_H = 32.0  # height of a full probability bar (probability 1)
SKIP_COLOUR = "#c7c7c7"
# depthwise kernel -> hue (blue, orange, green); the expansion ratio sets the lightness
_KERNEL_HUE = {3: 0.58, 5: 0.08, 7: 0.36}
_FONT = "font-family:DejaVu Sans,Verdana,Arial,sans-serif"
_STYLE = f"""
text {{ {_FONT}; font-size:11px; fill:#222 }}
.title {{ font-size:15px; font-weight:bold }}
.sub {{ fill:#555 }}
.head {{ font-weight:bold }}
.axis {{ fill:#666; font-size:10px }}
.grid {{ stroke:#ddd; stroke-width:1 }}
.warm {{ stroke:#888; stroke-width:1; stroke-dasharray:4 3 }}
.sep {{ stroke:#999; stroke-width:1; stroke-dasharray:3 3 }}
.madds {{ fill:none; stroke-width:1.5 }}
.expected {{ stroke:#1f77b4 }}
.argmax {{ stroke:#d62728; stroke-dasharray:5 3 }}
.box {{ stroke:#444; stroke-width:0.8 }}
.changed {{ stroke:#d62728; stroke-width:2.2 }}
.added {{ stroke:#d62728; stroke-width:2.2; stroke-dasharray:4 2 }}
.dropped {{ fill-opacity:0.3; stroke:#d62728; stroke-width:1.5; stroke-dasharray:3 2 }}
.diff {{ fill:#d62728; font-weight:bold }}
.on-dark {{ fill:#fff }}
"""


# -- SVG text ----------------------------------------------------------------------------------
def _num(v: float) -> str:
    """A coordinate as short fixed-point text (SVG reads no 'nan'; 3 decimals are plenty)."""
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


class _Svg:
    """Collects elements; ``text()`` gives the document."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    @staticmethod
    def _attrs(attrs: Mapping[str, object]) -> str:
        out = []
        for k, v in attrs.items():
            if v is None:
                continue
            text = _num(v) if isinstance(v, float) else str(v)
            out.append(f" {k.rstrip('_').replace('_', '-')}={quoteattr(text)}")
        return "".join(out)

    def el(self, tag: str, text: str | None = None, tip: str | None = None,
           **attrs: object) -> None:
        """One element; ``tip`` becomes a <title> child (a tooltip in browsers)."""
        inner = (f"<title>{escape(tip)}</title>" if tip else "") + (escape(text) if text else "")
        if inner:
            self.parts.append(f"<{tag}{self._attrs(attrs)}>{inner}</{tag}>")
        else:
            self.parts.append(f"<{tag}{self._attrs(attrs)}/>")

    def open(self, tag: str, tip: str | None = None, **attrs: object) -> None:
        self.parts.append(f"<{tag}{self._attrs(attrs)}>"
                          + (f"<title>{escape(tip)}</title>" if tip else ""))

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def text(self, width: float, height: float, title: str) -> str:
        head = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{_num(width)}" '
                f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}">\n'
                f"<title>{escape(title)}</title>\n"
                f'<style type="text/css">{_STYLE}</style>\n'
                f'<rect x="0" y="0" width="{_num(width)}" height="{_num(height)}" '
                'fill="#ffffff"/>\n')
        return head + "\n".join(self.parts) + "\n</svg>\n"


def write_svg(path: str | Path, text: str) -> Path:
    """Write an SVG atomically (a reader never sees half a picture). No overwrite check here:
    commands call ``fnacli.io.check_writable`` first; the search rewrites its plot every epoch."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# -- colours -----------------------------------------------------------------------------------
def _hex(h: float, light: float, sat: float) -> str:
    r, g, b = colorsys.hls_to_rgb(h, light, sat)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def op_colours(ops: Sequence[str]) -> dict[str, str]:
    """A distinct colour per candidate op: hue by kernel, lightness by expansion (lighter =
    smaller), grey for skip."""
    expansions = sorted({Op.parse(o).expand for o in ops if o != SKIP})
    out = {}
    for o in ops:
        if o == SKIP:
            out[o] = SKIP_COLOUR
            continue
        op = Op.parse(o)
        rank = expansions.index(op.expand)
        light = 0.5 if len(expansions) == 1 else 0.76 - 0.46 * rank / (len(expansions) - 1)
        out[o] = _hex(_KERNEL_HUE[op.kernel], light, 0.65)
    return out


def is_dark(colour: str) -> bool:
    """Whether ``#rrggbb`` needs white text (relative luminance below about a half)."""
    r, g, b = (int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5


def width_colours(n: int) -> list[str]:
    """A sequential ramp for channel candidates, narrow (light) to wide (dark)."""
    return [_hex(0.47, 0.86 - 0.62 * (k / (n - 1) if n > 1 else 1.0), 0.55) for k in range(n)]


# -- the search's records ----------------------------------------------------------------------
def alpha_layers(space: SpaceSpec) -> list[tuple[int, int, tuple[str, ...]]]:
    """(stage, layer, candidates) of every layer that carries α, in the order of
    ``fnacli.nn.supernet.op_choices`` (repeated here because that module needs torch)."""
    return [(s, i, st.layer_candidates(i)) for s, st in enumerate(space.stages) if st.searchable
            for i in range(st.layers)]


def beta_stages(space: SpaceSpec) -> list[tuple[int, tuple[int, ...]]]:
    """(stage, channel candidates) of every stage that carries β."""
    return [(s, st.outs) for s, st in enumerate(space.stages) if len(st.outs) > 1]


def _check_probs(got: object, want: Sequence[str], where: str, what: str) -> None:
    if not isinstance(got, dict) or set(got) != set(want):
        names = sorted(got) if isinstance(got, dict) else got
        raise UserError(f"{where}: {what} lists {names}, the checkpoint's space has "
                        f"{list(want)} (is this the metrics file of another search?)")
    for k, p in got.items():
        if not isinstance(p, int | float) or isinstance(p, bool) or not -1e-6 <= p <= 1 + 1e-6:
            raise UserError(f"{where}: {what}: probability of {k} is {p!r}, expected a number "
                            "in [0, 1]")


def check_record(rec: Mapping, space: SpaceSpec, where: str) -> None:
    """UserError unless ``rec`` holds α/β probabilities of exactly ``space``'s choices."""
    epoch = rec.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise UserError(f"{where}: 'epoch' must be an integer ≥ 0, got {epoch!r}")
    alpha, beta = rec.get("alpha"), rec.get("beta", {})
    layers, stages = alpha_layers(space), beta_stages(space)
    if not isinstance(alpha, dict) or set(alpha) != {f"{s}.{i}" for s, i, _ in layers}:
        raise UserError(f"{where}: 'alpha' does not hold the {len(layers)} searchable layers of "
                        "the checkpoint's space (is this the metrics file of another search?)")
    if not isinstance(beta, dict) or set(beta) != {str(s) for s, _ in stages}:
        raise UserError(f"{where}: 'beta' does not hold the {len(stages)} channel-searched "
                        "stages of the checkpoint's space")
    for s, i, cands in layers:
        _check_probs(alpha[f"{s}.{i}"], cands, where, f"α of stage {s} layer {i}")
    for s, outs in stages:
        _check_probs(beta[str(s)], [str(c) for c in outs], where, f"β of stage {s}")
    for key in ("expected_madds", "argmax_madds"):
        v = rec.get(key)
        if v is not None and (not isinstance(v, int | float) or not math.isfinite(v)):
            raise UserError(f"{where}: {key!r} must be a number, got {v!r}")


def read_epoch_records(path: str | Path, space: SpaceSpec) -> list[dict]:
    """The per-epoch α/β records of a search's JSON-lines metrics file, by epoch (a later line
    of the same epoch wins); lines cut by a crash are skipped, as ``MetricsLog`` does."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the metrics file ({e})") from None
    by_epoch: dict[int, dict] = {}
    for n, line in enumerate(text.splitlines(), 1):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # a line cut by a crash, or not ours
            continue
        if not isinstance(rec, dict) or rec.get("event") != "epoch":
            continue
        where = f"{path}: line {n}"
        if not isinstance(rec.get("epoch"), int):
            raise UserError(f"{where}: an epoch record without an integer 'epoch'")
        check_record(rec, space, where)
        by_epoch[rec["epoch"]] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


# -- the search plot ---------------------------------------------------------------------------
def _op_key(op: str) -> tuple[int, int]:
    o = Op.parse(op)
    return o.kernel, o.expand


def _stage_label(space: SpaceSpec, s: int) -> str:
    st = space.stages[s]
    outs = str(st.outs[0]) if len(st.outs) == 1 else f"{st.outs[0]}…{st.outs[-1]}"
    return f"stage {s} · stride {st.stride} · out {outs}"


def _column_label(rec: Mapping) -> str:
    return str(rec["epoch"] + 1) if isinstance(rec.get("epoch"), int) else "now"


def _argmax(probs: Mapping[str, float], order: Sequence[str]) -> str:
    # ties go to the first candidate, as in fnacli.search.arch.argmax_path
    return max(order, key=lambda c: (probs[c], -order.index(c)))


def render_search_plot(space: SpaceSpec, records: Sequence[Mapping], *, title: str,
                       subtitle: str = "", warmup_epochs: int | None = None) -> str:
    """The α/β plot of ``records`` (metrics-file epoch records, checked against ``space``)."""
    if not records:
        raise ValueError("no records to plot")
    layers, stages = alpha_layers(space), beta_stages(space)
    # legend order: by kernel, then expansion, skip last
    cands_all = sorted({c for _, _, cands in layers for c in cands},
                       key=lambda c: (1, 0, 0) if c == SKIP else (0, *_op_key(c)))
    colours = op_colours(cands_all)
    n = len(records)
    cw = max(8.0, min(28.0, 640.0 / n))  # column pitch
    bw = round(cw * 0.78, 2)  # bar width; the rest is the gap between epochs
    left, right, pitch = 150.0, 96.0, BAR_H + 8
    width = max(left + n * cw + right, 560.0)
    svg = _Svg()
    y = 24.0
    svg.el("text", title, x=12.0, y=y, class_="title")
    if subtitle:
        y += 17
        svg.el("text", subtitle, x=12.0, y=y, class_="sub")

    # legend: one swatch per candidate op, wrapping across the width
    y += 14
    lx = 12.0
    svg.open("g", class_="legend")
    for c in cands_all:
        if lx + 86 > width:
            lx, y = 12.0, y + 16
        svg.el("rect", x=lx, y=y, width=12.0, height=12.0, fill=colours[c], class_="swatch",
               id=f"legend-{c}")
        svg.el("text", c, x=lx + 16, y=y + 10)
        lx += 86
    svg.close("g")
    y += 26
    grid_top = y

    def bar(ident: str, probs: Mapping[str, float], order: Sequence[str], fills: Sequence[str],
            x: float, bottom: float, tip: str) -> None:
        # segments stacked from the bottom in candidate order; segment height = p · BAR_H
        svg.open("g", id=ident, class_="bar")
        acc = 0.0
        for c, fill in zip(order, fills, strict=True):
            p = max(0.0, float(probs[c]))
            svg.el("rect", tip=f"{tip}: {c} {p:.4f}", id=f"{ident}-{c}", x=x,
                   y=bottom - (acc + p) * BAR_H, width=bw, height=p * BAR_H, fill=fill,
                   class_="seg")
            acc += p
        svg.close("g")

    def row(label: str, ident: str, key: tuple[str, str], order: Sequence[str],
            fills: Sequence[str], tip: str) -> None:
        nonlocal y
        bottom = y + pitch - 4
        svg.el("text", label, x=left - 8, y=bottom - BAR_H / 2 + 4, text_anchor="end")
        for j, rec in enumerate(records):
            bar(f"{ident}-e{j}", rec[key[0]][key[1]], order, fills, left + j * cw, bottom,
                f"{tip}, epoch {_column_label(rec)}")
        last = _argmax(records[-1][key[0]][key[1]], order)
        svg.el("text", f"→ {last}", x=left + n * cw + 6, y=bottom - BAR_H / 2 + 4, class_="sub")
        y += pitch

    current = None
    for s, i, cands in layers:
        if s != current:
            current = s
            y += 6
            svg.el("text", _stage_label(space, s), x=12.0, y=y + 8, class_="head")
            y += 10
        row(f"layer {i}", f"a-{s}-{i}", ("alpha", f"{s}.{i}"), cands,
            [colours[c] for c in cands], f"stage {s} layer {i}")
    if stages:
        y += 8
        svg.el("text", "output channels (β): narrow = light, wide = dark", x=12.0, y=y + 8,
               class_="head")
        y += 10
        for s, outs in stages:
            order = [str(c) for c in outs]
            row(f"stage {s} ({outs[0]}…{outs[-1]})", f"b-{s}", ("beta", str(s)), order,
                width_colours(len(outs)), f"stage {s} width")
    grid_bottom = y

    # epoch axis (1-based, like the progress bar) and the start of the α/β steps
    step = max(1, math.ceil(26 / cw))
    for j, rec in enumerate(records):
        if (n - 1 - j) % step == 0:  # counted back from the last epoch, which is always shown
            svg.el("text", _column_label(rec), x=left + j * cw + bw / 2, y=y + 12,
                   text_anchor="middle", class_="axis")
    svg.el("text", "epoch", x=left - 8, y=y + 12, text_anchor="end", class_="axis")
    if warmup_epochs:
        first = next((j for j, r in enumerate(records)
                      if isinstance(r.get("epoch"), int) and r["epoch"] >= warmup_epochs), None)
        if first:  # not when every column is already past the warm-up
            x = left + first * cw - (cw - bw) / 2
            svg.el("line", x1=x, y1=grid_top - 4, x2=x, y2=grid_bottom, class_="warm")
            svg.el("text", "α/β steps start", x=x + 3, y=grid_top + 4, class_="axis")
    y += 24
    y = _madds_chart(svg, records, left, cw, bw, y)
    return svg.text(width, y + 12, title)


def _madds_chart(svg: _Svg, records: Sequence[Mapping], left: float, cw: float, bw: float,
                 top: float) -> float:
    """Expected and argmax MAdds per epoch, x aligned with the bars; returns the new bottom."""
    series = {k: [(j, float(r[k])) for j, r in enumerate(records) if r.get(k) is not None]
              for k in ("expected_madds", "argmax_madds")}
    values = [v for pts in series.values() for _, v in pts]
    if not values:
        return top
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1.0)
    lo, hi = lo - pad, hi + pad
    height = 110.0

    def ypos(v: float) -> float:
        return top + 18 + height * (hi - v) / (hi - lo)

    svg.el("text", "MAdds", x=12.0, y=top + 8, class_="head")
    lx = left
    for key, cls, name in (("expected_madds", "expected", "expected (α/β-weighted)"),
                           ("argmax_madds", "argmax", "derived (argmax)")):
        if series[key]:
            svg.el("line", x1=lx, y1=top + 4, x2=lx + 18, y2=top + 4, class_=f"madds {cls}")
            svg.el("text", name, x=lx + 22, y=top + 8, class_="axis")
            lx += 170
    svg.el("line", x1=left, y1=top + 18, x2=left, y2=top + 18 + height, class_="grid")
    svg.el("line", x1=left, y1=top + 18 + height, x2=left + len(records) * cw,
           y2=top + 18 + height, class_="grid")
    for v in (hi - pad, lo + pad):
        svg.el("text", f"{v / 1e6:,.1f}M", x=left - 6, y=ypos(v) + 4, text_anchor="end",
               class_="axis")
    for key, cls in (("expected_madds", "expected"), ("argmax_madds", "argmax")):
        pts = series[key]
        if not pts:
            continue
        coords = [(left + j * cw + bw / 2, ypos(v)) for j, v in pts]
        svg.el("polyline", points=" ".join(f"{_num(x)},{_num(yv)}" for x, yv in coords),
               class_=f"madds {cls}", id=f"line-{cls}")
        for (x, yv), (j, v) in zip(coords, pts, strict=True):
            svg.el("circle", tip=f"epoch {_column_label(records[j])}: {v / 1e6:,.2f}M MAdds",
                   cx=x, cy=yv, r=2.0, class_=f"pt {cls}", fill="#1f77b4" if cls == "expected"
                   else "#d62728")
    return top + 18 + height + 10


def search_plot_path(output: str | Path) -> Path:
    """Where ``fnacli search -o SEARCHED`` keeps its plot: ``SEARCHED.arch.svg`` (beside
    ``SEARCHED.metrics.jsonl``)."""
    return Path(f"{output}.arch.svg")


# -- the architecture diagram ------------------------------------------------------------------
def op_label(op: Op) -> str:
    """``k5_e6`` -> ``K5E6`` (the diagram's box label)."""
    return f"K{op.kernel}E{op.expand}"


def render_arch_diagram(arch: ArchSpec, seed: ArchSpec | None = None, *,
                        title: str = "architecture", names: tuple[str, str] = ("derived",
                                                                                "seed")) -> str:
    """``arch`` top to bottom, beside ``seed`` when given (differences marked on ``arch``)."""
    cols = [(names[0], arch, "d")] + ([(names[1], seed, "s")] if seed is not None else [])
    widths = [st.out for _, spec, _ in cols for st in spec.stages]
    widths += [spec.stem_out for _, spec, _ in cols]
    cmax = max(widths)
    box_min, box_max, row_h, box_h = 58.0, 190.0, 22.0, 18.0
    col_w, left = box_max + 70, 150.0
    ops = sorted({str(o) for _, spec, _ in cols for st in spec.stages for o in st.ops})
    colours = op_colours(ops)

    def box_w(c: int) -> float:
        return box_min + (box_max - box_min) * min(c, cmax) / cmax

    svg = _Svg()
    svg.el("text", title, x=12.0, y=24.0, class_="title")
    y = 48.0
    for k, (name, spec, _) in enumerate(cols):
        n_layers = sum(st.depth for st in spec.stages)
        svg.el("text", f"{name} · {n_layers} layers", x=left + k * col_w + box_max / 2,
               y=y, text_anchor="middle", class_="head")
    y += 12

    def box(prefix: str, ident: str, x_mid: float, w: float, label: str, ch: str, fill: str,
            cls: str = "box", ch_cls: str = "ch", tip: str = "") -> None:
        svg.open("g", id=f"{prefix}-{ident}", class_=f"block {ident.split('-')[0]}", tip=tip)
        svg.el("rect", x=x_mid - w / 2, y=y, width=w, height=box_h, rx=3.0, fill=fill,
               class_=cls)
        svg.el("text", label, x=x_mid, y=y + 13, text_anchor="middle",
               class_="op on-dark" if is_dark(fill) else "op")
        svg.el("text", ch, x=x_mid + w / 2 + 5, y=y + 13, class_=ch_cls)
        svg.close("g")

    # stem
    for k, (_, spec, prefix) in enumerate(cols):
        mid = left + k * col_w + box_max / 2
        differs = prefix == "d" and seed is not None and seed.stem_out != arch.stem_out
        box(prefix, "stem", mid, box_w(spec.stem_out), f"stem 3×3 /{spec.stem_stride}",
            str(spec.stem_out), "#eeeeee", ch_cls="ch diff" if differs else "ch",
            tip=f"stem conv 3x3, stride {spec.stem_stride}, {spec.stem_out} channels")
    svg.el("text", "stem", x=left - 10, y=y + 13, text_anchor="end", class_="sub")
    y += row_h + 6
    n_stages = max(len(spec.stages) for _, spec, _ in cols)
    for s in range(n_stages):
        here = [(k, c) for k, c in enumerate(cols) if s < len(c[1].stages)]
        stride = here[0][1][1].stages[s].stride
        total = here[0][1][1].stage_strides()[s]
        svg.el("line", x1=12.0, y1=y - 3, x2=left + len(cols) * col_w, y2=y - 3, class_="sep",
               id=f"sep-{s}")
        svg.el("text", f"stage {s}", x=left - 10, y=y + 11, text_anchor="end", class_="head")
        svg.el("text", f"stride {stride} · /{total}", x=left - 10, y=y + 24, text_anchor="end",
               class_="sub")
        depth = max(c[1].stages[s].depth for _, c in here)
        for i in range(depth):
            for k, (_, spec, prefix) in here:
                st = spec.stages[s]
                mid = left + k * col_w + box_max / 2
                if i >= st.depth:
                    continue
                op = st.ops[i]
                cls, ch_cls = "box", "ch"
                if seed is not None and s < len(seed.stages) and s < len(arch.stages):
                    mine, theirs = arch.stages[s], seed.stages[s]
                    if prefix == "d" and i >= theirs.depth:
                        cls = "box added"
                    elif prefix == "d" and theirs.ops[i] != op:
                        cls = "box changed"
                    elif prefix == "s" and i >= mine.depth:
                        cls = "box dropped"
                    if prefix == "d" and theirs.out != mine.out:
                        ch_cls = "ch diff"
                stride_i = st.stride if i == 0 else 1
                box(prefix, f"layer-{s}-{i}", mid, box_w(st.out), op_label(op), str(st.out),
                    colours[str(op)], cls, ch_cls,
                    tip=f"stage {s} layer {i}: {op}, {st.out} channels, stride {stride_i}")
            y += row_h
        y += 10
    # head
    if any(spec.head_out for _, spec, _ in cols):
        svg.el("line", x1=12.0, y1=y - 3, x2=left + len(cols) * col_w, y2=y - 3, class_="sep")
        for k, (_, spec, prefix) in enumerate(cols):
            if spec.head_out:
                differs = prefix == "d" and seed is not None and seed.head_out != arch.head_out
                box(prefix, "head", left + k * col_w + box_max / 2, box_max, "head 1×1",
                    str(spec.head_out), "#eeeeee", ch_cls="ch diff" if differs else "ch",
                    tip=f"head conv 1x1, {spec.head_out} channels")
        svg.el("text", "head", x=left - 10, y=y + 13, text_anchor="end", class_="sub")
        y += row_h + 6
    if seed is not None:
        y = _diagram_legend(svg, y + 6, names)
    return svg.text(left + len(cols) * col_w + 10, y + 10, title)


def _diagram_legend(svg: _Svg, y: float, names: tuple[str, str]) -> float:
    """What the marks on the boxes mean, one per line."""
    items = [("box changed", f"op differs from the {names[1]}'s"),
             ("box added", f"layer the {names[1]} does not have"),
             ("box dropped", f"{names[1]} layer that the {names[0]} network drops")]
    svg.open("g", class_="legend")
    for cls, text in items:
        svg.el("rect", x=12.0, y=y, width=22.0, height=12.0, rx=2.0, fill="#ffffff", class_=cls)
        svg.el("text", text, x=40.0, y=y + 10, class_="sub")
        y += 17
    svg.el("text", "96", x=18.0, y=y + 10, class_="diff")
    svg.el("text", f"output channels differ from the {names[1]}'s", x=40.0, y=y + 10,
           class_="sub")
    svg.close("g")
    return y + 20
