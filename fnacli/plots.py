"""Pictures, drawn with matplotlib: α/β probabilities over a search, and an architecture diagram.

matplotlib is an optional extra (``pip install 'fnacli[plots]'``); without it the functions
that draw raise a ``UserError`` saying so, and a search only warns. torch stays out of this
module (the CLI imports it cheaply); matplotlib is imported when a picture is drawn.

Search plot (``search_figure``): one small panel per searchable layer, grouped in rows by
stage, with one line per candidate op: its probability softmax(α) over the epochs, on a
0-1 axis. The same for the width candidates (β) of every channel-searched stage, then the
expected and argmax MAdds over the epochs. The records are the ``"event": "epoch"`` lines of
``SEARCHED.metrics.jsonl``.

Diagram (``diagram_figure``): the architecture top to bottom (stem, a box per layer labelled
``KkEe`` whose width grows with its output channels, stage separators with stride, the head),
optionally beside the seed's with the differences marked.

Every op has one colour everywhere (``op_colour``): the hue is the depthwise kernel, the
lightness the expansion ratio, skip is grey.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.io import atomic_path
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec

SKIP_COLOUR = "#9e9e9e"
# depthwise kernel -> hue (blue, orange, green; other kernels purple)
_KERNEL_HUE = {3: 0.58, 5: 0.08, 7: 0.36}
PICTURE_FORMATS = (".svg", ".png", ".pdf")
EXPECTED_COLOUR, ARGMAX_COLOUR = "#1f77b4", "#d62728"
MAX_WIDTH_LINES = 6  # β of a stage with more width candidates is drawn as a heatmap


# -- colours -----------------------------------------------------------------------------------
def _hex(h: float, light: float, sat: float) -> str:
    r, g, b = colorsys.hls_to_rgb(h, light, sat)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def op_colour(op: str | Op) -> str:
    """The one colour of an op in every picture: hue by kernel, darker for a larger expansion
    (e1 light, e3 medium, e6 dark), grey for skip. A function of the op alone, so the plot's
    legend and the diagram's boxes always agree."""
    if str(op) == SKIP:
        return SKIP_COLOUR
    o = op if isinstance(op, Op) else Op.parse(op)
    light = min(0.8, max(0.3, 0.86 - 0.072 * o.expand))
    return _hex(_KERNEL_HUE.get(o.kernel, 0.8), light, 0.65)


def op_colours(ops: Sequence[str]) -> dict[str, str]:
    return {o: op_colour(o) for o in ops}


def is_dark(colour: str) -> bool:
    """Whether ``#rrggbb`` needs white text (relative luminance below about a half)."""
    r, g, b = (int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5


def width_colours(n: int) -> list[str]:
    """A sequential ramp for channel candidates, narrow (light) to wide (dark)."""
    return [_hex(0.47, 0.78 - 0.56 * (k / (n - 1) if n > 1 else 1.0), 0.6) for k in range(n)]


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


def _argmax(probs: Mapping[str, float], order: Sequence[str]) -> str:
    # ties go to the first candidate, as in fnacli.search.arch.argmax_path
    return max(order, key=lambda c: (probs[c], -order.index(c)))


def _op_order(c: str) -> tuple[int, int, int]:
    if c == SKIP:
        return (1, 0, 0)
    o = Op.parse(c)
    return (0, o.kernel, o.expand)


# -- matplotlib --------------------------------------------------------------------------------
def _figure(width_in: float, height_in: float) -> Any:
    """A matplotlib Figure that needs no GUI and no pyplot state."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("drawing pictures needs matplotlib (pip install 'fnacli[plots]')"
                        ) from None
    return Figure(figsize=(width_in, height_in), layout="constrained")


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` atomically in the format of ``path``'s suffix (.svg, .png or .pdf).
    Reproducible: no dates in the files, fixed SVG ids. No overwrite check here: commands
    call ``fnacli.io.check_writable`` first; the search rewrites its plot every epoch."""
    import matplotlib

    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in PICTURE_FORMATS:
        raise UserError(f"{path}: a picture is .svg, .png or .pdf")
    meta = {"svg": {"Date": None}, "png": {"Software": None}, "pdf": {"CreationDate": None}}
    with matplotlib.rc_context({"svg.hashsalt": "fnacli", "svg.fonttype": "none"}), \
            atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt[1:], dpi=110, metadata=meta[fmt[1:]])
    return path


def search_plot_path(output: str | Path, fmt: str = ".svg") -> Path:
    """Where ``fnacli search -o SEARCHED`` keeps its plot: ``SEARCHED.arch.svg`` and
    ``SEARCHED.arch.png`` (beside ``SEARCHED.metrics.jsonl``)."""
    return Path(f"{output}.arch{fmt}")


def _epoch_axis(records: Sequence[Mapping]) -> tuple[list[float], list[str]]:
    """x of each record: its epoch (counted from 1); a record without one (a checkpoint's
    current α/β) goes after the others, labelled "now"."""
    xs, labels = [], []
    last = 0
    for rec in records:
        e = rec.get("epoch")
        if isinstance(e, int) and not isinstance(e, bool):
            last = e
            xs.append(float(e))
            labels.append(str(e))
        else:
            last += 1
            xs.append(float(last))
            labels.append("now")
    return xs, labels


def _epoch_ticks(ax: Any, xs: list[float], labels: list[str]) -> None:
    """Whole epochs only (a "now" column by its name)."""
    from matplotlib.ticker import MaxNLocator

    if "now" in labels or len(xs) <= 6:
        ax.set_xticks(xs, labels)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def _prob_axes(ax: Any, xs: list[float], labels: list[str], warmup: int | None) -> None:
    ax.set_ylim(-0.04, 1.04)
    ax.set_yticks([0, 0.5, 1])
    ax.grid(True, axis="y", color="#e0e0e0", linewidth=0.6)
    ax.tick_params(labelsize=7, length=2)
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    _epoch_ticks(ax, xs, labels)
    if warmup:
        ax.axvspan(min(xs) - 0.5, warmup + 0.5, color="#f0f0f0", zorder=0, linewidth=0)


def _width_heatmap(fig: Any, ax: Any, s: int, outs: Sequence[int], records: Sequence[Mapping],
                   xs: list[float], labels: list[str]) -> None:
    """β of a stage with many width candidates: widths up, epochs across, probability as
    colour on a labelled 0-1 scale."""
    grid = [[float(rec["beta"][str(s)][str(w)]) for rec in records] for w in outs]
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="Greens", vmin=0.0, vmax=1.0,
                      interpolation="nearest",
                      extent=(min(xs) - 0.5, max(xs) + 0.5, -0.5, len(outs) - 0.5))
    image.set_gid(f"b-{s}-heatmap")
    ticks = sorted({0, len(outs) // 2, len(outs) - 1})
    ax.set_yticks(ticks, [str(outs[t]) for t in ticks])
    ax.set_ylabel("channels", fontsize=7)
    ax.tick_params(labelsize=7, length=2)
    _epoch_ticks(ax, xs, labels)
    bar = fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], pad=0.02, fraction=0.08)
    bar.set_label("P(width)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def search_figure(space: SpaceSpec, records: Sequence[Mapping], *, title: str,
                  subtitle: str = "", warmup_epochs: int | None = None) -> Any:
    """The α/β/MAdds figure of ``records`` (metrics-file epoch records, checked against
    ``space``). Panels carry gids: ``a-S-L`` (α of stage S layer L), ``b-S`` (β of stage S),
    ``madds``; their lines ``a-S-L-OP``, ``b-S-WIDTH``, ``madds-expected``/``madds-argmax``."""
    if not records:
        raise ValueError("no records to plot")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    layers, stages = alpha_layers(space), beta_stages(space)
    xs, labels = _epoch_axis(records)
    rows: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
    for s, i, cands in layers:
        rows.setdefault(s, []).append((i, cands))
    ncols = max([len(v) for v in rows.values()] + [min(len(stages), 4), 1])
    beta_rows = math.ceil(len(stages) / ncols) if stages else 0
    has_madds = any(r.get(k) is not None for r in records
                    for k in ("expected_madds", "argmax_madds"))
    nrows = len(rows) + beta_rows + (1 if has_madds else 0)
    fig = _figure(max(7.5, 2.3 * ncols), 1.0 + 1.55 * nrows + (0.6 if has_madds else 0))
    grid = fig.add_gridspec(max(nrows, 1), ncols,
                            height_ratios=[1.0] * (nrows - has_madds) + [1.35] * has_madds)
    warm = warmup_epochs if warmup_epochs and min(xs) <= warmup_epochs else None

    for r, (s, lays) in enumerate(rows.items()):
        for c, (i, cands) in enumerate(lays):
            ax = fig.add_subplot(grid[r, c])
            ax.set_gid(f"a-{s}-{i}")
            _prob_axes(ax, xs, labels, warm)
            for cand in sorted(cands, key=_op_order):
                ys = [float(rec["alpha"][f"{s}.{i}"][cand]) for rec in records]
                (line,) = ax.plot(xs, ys, color=op_colour(cand), marker="o", markersize=2.5,
                                  linewidth=1.5, label=cand,
                                  linestyle="--" if cand == SKIP else "-")
                line.set_gid(f"a-{s}-{i}-{cand}")
            now = _argmax(records[-1]["alpha"][f"{s}.{i}"], list(cands))
            ax.set_title(f"stage {s} layer {i} → {now}", fontsize=8, loc="left")
            if c == 0:
                ax.set_ylabel("P(op)", fontsize=8)
    for k, (s, outs) in enumerate(stages):
        ax = fig.add_subplot(grid[len(rows) + k // ncols, k % ncols])
        ax.set_gid(f"b-{s}")
        now = _argmax(records[-1]["beta"][str(s)], [str(w) for w in outs])
        ax.set_title(f"stage {s} width (β) → {now}", fontsize=8, loc="left")
        if len(outs) > MAX_WIDTH_LINES:  # too many lines to tell apart: a heatmap
            _width_heatmap(fig, ax, s, outs, records, xs, labels)
            continue
        _prob_axes(ax, xs, labels, warm)
        for w, colour in zip(outs, width_colours(len(outs)), strict=True):
            ys = [float(rec["beta"][str(s)][str(w)]) for rec in records]
            (line,) = ax.plot(xs, ys, color=colour, marker="o", markersize=2.5, linewidth=1.4,
                              label=str(w))
            line.set_gid(f"b-{s}-{w}")
        ax.legend(fontsize=6, ncols=min(len(outs), 3), loc="best", title_fontsize=6,
                  title="channels", frameon=False)
        if k % ncols == 0:
            ax.set_ylabel("P(width)", fontsize=8)
    for ax in fig.axes:
        if ax.get_gid():  # the panels, not the heatmaps' colour bars
            ax.set_xlabel("epoch", fontsize=7, labelpad=1)
    if has_madds:
        ax = fig.add_subplot(grid[nrows - 1, :])
        ax.set_gid("madds")
        for key, name, colour, style in (
                ("expected_madds", "expected (α/β-weighted, what the cost term sees)",
                 EXPECTED_COLOUR, "-"),
                ("argmax_madds", "derived (argmax) architecture", ARGMAX_COLOUR, "--")):
            pts = [(x, float(rec[key]) / 1e6) for x, rec in zip(xs, records, strict=True)
                   if rec.get(key) is not None]
            if pts:
                (line,) = ax.plot(*zip(*pts, strict=True), color=colour, linestyle=style,
                                  marker="o", markersize=3, linewidth=1.6, label=name)
                line.set_gid(f"madds-{key.split('_')[0]}")
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        _epoch_ticks(ax, xs, labels)
        if warm:
            ax.axvspan(min(xs) - 0.5, warm + 0.5, color="#f0f0f0", zorder=0, linewidth=0)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("MAdds (millions)", fontsize=8)
        ax.set_title("MAdds of the detector", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.legend(fontsize=7, frameon=False)
    ops = sorted({c for _, _, cands in layers for c in cands}, key=_op_order)
    handles: list[Any] = [Line2D([], [], color=op_colour(c), linewidth=2,
                                 linestyle="--" if c == SKIP else "-", label=c) for c in ops]
    if warm:
        handles.append(Patch(color="#f0f0f0", label="warm-up (α/β fixed)"))
    # the title heads the legend of the ops: one block above the panels, nothing overlaps
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8),
               fontsize=8, frameon=False, title=title + (f"\n{subtitle}" if subtitle else ""),
               title_fontproperties={"size": 10})
    return fig


# -- the architecture diagram ------------------------------------------------------------------
def op_label(op: Op) -> str:
    """``k5_e6``: the diagram's box label, spelled as specs spell ops."""
    return f"k{op.kernel}_e{op.expand}"


def diagram_marks(arch: ArchSpec, seed: ArchSpec | None) -> dict[str, set[str]]:
    """Which boxes the diagram marks: ``changed`` (op differs from the seed's at the same
    position), ``added`` (a layer the seed lacks), ``dropped`` (a seed layer the derived
    network drops), ``width`` (derived layers whose stage width differs). Box ids are
    ``d-layer-S-L`` (derived) and ``s-layer-S-L`` (seed)."""
    marks: dict[str, set[str]] = {"changed": set(), "added": set(), "dropped": set(),
                                  "width": set()}
    if seed is None:
        return marks
    for s, (a, b) in enumerate(zip(arch.stages, seed.stages, strict=False)):
        for i in range(max(a.depth, b.depth)):
            if i >= b.depth:
                marks["added"].add(f"d-layer-{s}-{i}")
            elif i >= a.depth:
                marks["dropped"].add(f"s-layer-{s}-{i}")
            elif a.ops[i] != b.ops[i]:
                marks["changed"].add(f"d-layer-{s}-{i}")
            if i < a.depth and a.out != b.out:
                marks["width"].add(f"d-layer-{s}-{i}")
    return marks


def diagram_figure(arch: ArchSpec, seed: ArchSpec | None = None, *, title: str = "architecture",
                   names: tuple[str, str] = ("derived", "seed")) -> Any:
    """``arch`` top to bottom, beside ``seed`` when given (differences marked on ``arch``).
    Boxes are patches with gids ``d-layer-S-L`` / ``s-layer-S-L`` (and ``d-stem``,
    ``d-head``, …); the drawing is in points (1 unit = 1/72 inch)."""
    from matplotlib.patches import FancyBboxPatch

    cols = [(names[0], arch, "d")] + ([(names[1], seed, "s")] if seed is not None else [])
    cmax = max([st.out for _, spec, _ in cols for st in spec.stages]
               + [spec.stem_out for _, spec, _ in cols])
    box_min, box_max, row_h, box_h = 58.0, 190.0, 22.0, 18.0
    col_w, left = box_max + 70, 150.0
    marks = diagram_marks(arch, seed)
    n_rows = max(sum(st.depth for st in spec.stages) for _, spec, _ in cols)
    n_stages = max(len(spec.stages) for _, spec, _ in cols)
    height = 60 + (row_h + 6) * 2 + n_rows * row_h + n_stages * 10 + (125 if seed else 20)
    width = left + len(cols) * col_w + 10
    fig = _figure(width / 72, height / 72)
    fig.set_layout_engine(None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    font = {"fontsize": 8, "va": "center"}

    def box_w(c: int) -> float:
        return box_min + (box_max - box_min) * min(c, cmax) / cmax

    def box(gid: str, x_mid: float, y: float, w: float, label: str, ch: str, fill: str,
            mark: str = "", ch_diff: bool = False) -> None:
        edge, style, lw, alpha = "#444444", "-", 0.8, 1.0
        if mark == "changed":
            edge, lw = ARGMAX_COLOUR, 2.0
        elif mark == "added":
            edge, style, lw = ARGMAX_COLOUR, "--", 2.0
        elif mark == "dropped":
            edge, style, lw, alpha = ARGMAX_COLOUR, "--", 1.4, 0.35
        patch = FancyBboxPatch((x_mid - w / 2, y), w, box_h, boxstyle="round,pad=0,rounding_size=3",
                               facecolor=fill, edgecolor=edge, linestyle=style, linewidth=lw,
                               alpha=alpha)
        patch.set_gid(gid)
        ax.add_patch(patch)
        ax.text(x_mid, y + box_h / 2, label, ha="center", color="white" if is_dark(fill)
                else "#222222", gid=f"{gid}-op", **font)
        ax.text(x_mid + w / 2 + 5, y + box_h / 2, ch, ha="left", gid=f"{gid}-ch",
                color=ARGMAX_COLOUR if ch_diff else "#222222",
                fontweight="bold" if ch_diff else "normal", **font)

    ax.text(12, 20, title, fontsize=11, fontweight="bold", va="center")
    y = 44.0
    for k, (name, spec, _) in enumerate(cols):
        n_layers = sum(st.depth for st in spec.stages)
        ax.text(left + k * col_w + box_max / 2, y, f"{name} · {n_layers} layers", ha="center",
                fontweight="bold", **font)
    y += 12
    for k, (_, spec, prefix) in enumerate(cols):
        differs = prefix == "d" and seed is not None and seed.stem_out != arch.stem_out
        box(f"{prefix}-stem", left + k * col_w + box_max / 2, y, box_w(spec.stem_out),
            f"stem 3×3 /{spec.stem_stride}", str(spec.stem_out), "#eeeeee", ch_diff=differs)
    ax.text(left - 10, y + box_h / 2, "stem", ha="right", color="#555555", **font)
    y += row_h + 6
    for s in range(n_stages):
        here = [(k, c) for k, c in enumerate(cols) if s < len(c[1].stages)]
        first = here[0][1][1]
        ax.plot([12, left + len(cols) * col_w], [y - 3, y - 3], color="#999999", linewidth=0.8,
                linestyle=(0, (3, 3)), gid=f"sep-{s}")
        ax.text(left - 10, y + 8, f"stage {s}", ha="right", fontweight="bold", **font)
        ax.text(left - 10, y + 21, f"stride {first.stages[s].stride} · "
                f"/{first.stage_strides()[s]}", ha="right", color="#555555", **font)
        for i in range(max(c[1].stages[s].depth for _, c in here)):
            for k, (_, spec, prefix) in here:
                st = spec.stages[s]
                if i >= st.depth:
                    continue
                gid = f"{prefix}-layer-{s}-{i}"
                mark = next((m for m in ("changed", "added", "dropped") if gid in marks[m]), "")
                box(gid, left + k * col_w + box_max / 2, y, box_w(st.out), op_label(st.ops[i]),
                    str(st.out), op_colour(st.ops[i]), mark, gid in marks["width"])
            y += row_h
        y += 10
    if any(spec.head_out for _, spec, _ in cols):
        ax.plot([12, left + len(cols) * col_w], [y - 3, y - 3], color="#999999", linewidth=0.8,
                linestyle=(0, (3, 3)), gid="sep-head")
        for k, (_, spec, prefix) in enumerate(cols):
            if spec.head_out:
                differs = prefix == "d" and seed is not None and seed.head_out != arch.head_out
                box(f"{prefix}-head", left + k * col_w + box_max / 2, y, box_max, "head 1×1",
                    str(spec.head_out), "#eeeeee", ch_diff=differs)
        ax.text(left - 10, y + box_h / 2, "head", ha="right", color="#555555", **font)
        y += row_h + 6
    if seed is not None:
        y += 6
        for mark, text in (("changed", f"op differs from the {names[1]}'s"),
                           ("added", f"layer the {names[1]} does not have"),
                           ("dropped", f"{names[1]} layer that the {names[0]} network drops")):
            box(f"legend-{mark}", 23, y, 22, "", "", "#ffffff", mark)
            ax.text(40, y + box_h / 2, text, color="#555555", **font)
            y += 22
        ax.text(18, y + box_h / 2, "96", color=ARGMAX_COLOUR, fontweight="bold", **font)
        ax.text(40, y + box_h / 2, f"output channels differ from the {names[1]}'s",
                color="#555555", **font)
    return fig


# -- compare ------------------------------------------------------------------------------------
def compare_figure(result: Any) -> Any:
    """``fnacli compare``'s picture: one column per architecture, a dot per fine-tuning seed,
    the mean ± std as a bar, the seed architecture's mean dashed and the best random one's
    dotted across; the verdict against the seed under each name."""
    arms = result.arms
    fig = _figure(max(4.0, 0.9 * len(arms) + 1.5), 3.6)
    ax = fig.add_subplot()
    for x, a in enumerate(arms):
        ys = list(a.values.values())
        if not ys:
            continue
        ax.scatter([x] * len(ys), ys, s=14, color="#7f7f7f", zorder=2)
        m, sd = a.mean_std
        ax.errorbar([x], [m], yerr=[sd or 0.0], fmt="o", color=EXPECTED_COLOUR, capsize=4,
                    zorder=3)
    for name, style in ((arms[0].name, "--"), (result.best_random, ":")):
        arm = next((a for a in arms if a.name == name and a.values), None)
        if arm is not None:
            ax.axhline(arm.mean_std[0], color=ARGMAX_COLOUR, linestyle=style, linewidth=1,
                       label=f"{name} mean")
    marks = {"better": "▲", "worse": "▼"}
    ax.set_xticks(range(len(arms)), [
        f"{a.name}\n{a.madds / arms[0].madds:.2f}×"
        + (f" {marks.get(a.vs_seed.verdict, '')}" if a.vs_seed else "") for a in arms],
        rotation=30 if len(arms) > 6 else 0, fontsize=8)
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.metric} over {len(result.seeds)} fine-tuning seeds", fontsize=9)
    ax.set_xlabel(f"▲/▼: better/worse than {arms[0].name}, paired t-test p < {result.alpha:g}",
                  fontsize=8)
    ax.legend(fontsize=8, loc="best")
    return fig


# -- a one-shot search: fitness against MAdds ---------------------------------------------------
def read_candidates(path: str | Path) -> list[dict]:
    """The candidate records (``"event": "candidate"``: fitness, MAdds, generation) of a
    one-shot search's ``OUTPUT.history.jsonl``; malformed lines are refused."""
    import json

    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{n}: not a JSON line") from None
        if isinstance(rec, dict) and rec.get("event") == "candidate":
            if not all(isinstance(rec.get(k), int | float) for k in ("fitness", "madds")):
                raise UserError(f"{path}:{n}: a candidate record without fitness and madds")
            out.append(rec)
    return out


def fitness_figure(candidates: Sequence[Mapping], *, title: str, subtitle: str,
                   chosen: Mapping | None = None, limits: tuple[float | None, float | None] = (
                       None, None), metric: str = "fitness") -> Any:
    """Every evaluated candidate's fitness against its MAdds, coloured by generation; the
    chosen architecture ringed and the MAdds limits drawn as dashed lines."""
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    xs = [c["madds"] / 1e6 for c in candidates]
    ys = [c["fitness"] for c in candidates]
    gens = [c.get("generation", 0) for c in candidates]
    points = ax.scatter(xs, ys, c=gens, cmap="viridis", s=18, alpha=0.85, linewidths=0)
    if len(set(gens)) > 1:
        fig.colorbar(points, ax=ax, label="generation")
    if chosen is not None:
        ax.scatter([chosen["madds"] / 1e6], [chosen["fitness"]], s=120, facecolors="none",
                   edgecolors="#c0392b", linewidths=1.6, label="chosen")
        ax.legend(loc="lower right", frameon=False)
    for v in limits:
        if v is not None:
            ax.axvline(v / 1e6, color="#7f8c8d", linestyle="--", linewidth=1)
    ax.set_xlabel("MAdds (M)")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    return fig
