"""Derive the architecture a search chose: argmax α per layer (skips dropped), argmax β per
stage; optionally its MAdds/params against the seed, the K most likely architectures (or
the K best a one-shot search evaluated), and pictures (``fnacli.plots``: SVG, PNG or PDF)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Message, Reporter, Size, as_size, step
from fnacli.report import Report, Table
from fnacli.settings import ON_MESSAGE, setting
from fnacli.tasks import metavar

DERIVE_BY = ("layer", "depth")  # argmax per layer (FNA), or depth first
if TYPE_CHECKING:
    from fnacli.budget import Budget
    from fnacli.cost.count import Profile
    from fnacli.cost.latency import LatencyTable
    from fnacli.spec import ArchSpec


@dataclass
class DeriveConfig:
    checkpoint: str | Path = setting(help="A searched checkpoint (any epoch) or a supernet.",
                                     metavar="SEARCHED|SUPERNET")
    min_depth: int | None = setting(None, "Never drop layers 0..N-1 of a stage [the search's].",
                                    min=0, metavar="N")
    profile: bool = setting(False, api="Count MAdds/params of the derived (and seed) "
                            "architecture (result.profile).")
    top: int | None = setting(None, "List the K most likely architectures with their "
                              "probabilities and MAdds (stderr; in --json output).", min=1,
                              metavar="K")
    task: str | None = setting(None, "Detector the MAdds are counted for [the search's, else "
                               "ssdlite].", metavar=metavar(("none",)))  # "none": the backbone
    size: Size | None = setting(None, "Input size of the MAdds [the search's, else the task's].")
    num_classes: int | None = setting(None, "Classes of the detector [the search's, else 80].",
                                      min=1)
    plot: str | Path | None = setting(None, "Draw α/β probabilities per epoch (from "
                                      "SEARCHED.metrics.jsonl, else the checkpoint's current "
                                      "α/β); the suffix picks SVG, PNG or PDF.",
                                      metavar="OUT.svg|OUT.png")
    diagram: str | Path | None = setting(None, "Draw the derived architecture (SVG, PNG or PDF), "
                                         "beside the seed's when the checkpoint records it.",
                                         metavar="OUT.svg|OUT.png")
    metrics: str | Path | None = setting(None, "The search's metrics for --plot [SEARCHED"
                                         ".metrics.jsonl when it exists].", metavar="FILE.jsonl")
    force: bool = setting(False, "Overwrite -o ARCH.json, --plot and --diagram files.")
    on_message: Message | None = setting(None, api=ON_MESSAGE)
    latency_table: str | Path | None = setting(None, "Report predicted latency beside MAdds, by "
                                               "a table from 'fnacli latency' (--force: one "
                                               "measured on another machine).")
    # a MAdds window for the derived architecture (matched-cost comparisons)
    min_madds: str | float | None = setting(None, "Derive the most likely architecture with at "
                                            "least these MAdds (e.g. 300M, or 60% of the seed's), "
                                            "for comparisons at matched cost.", metavar="MADDS")
    max_madds: str | float | None = setting(None, "... and at most these MAdds.",
                                            metavar="MADDS")
    # or a latency window, by --latency-table (matched predicted latency)
    min_latency: str | float | None = setting(None, "With --latency-table: derive the most "
                                              "likely architecture with at least this "
                                              "predicted latency (e.g. 12ms, or 90% of the "
                                              "seed's).", metavar="TIME")
    max_latency: str | float | None = setting(None, "... and at most this predicted latency.",
                                              metavar="TIME")
    by: str = setting("layer", "layer: argmax α per layer (FNA); depth: per stage the most likely "
                      "depth (skip positions summed), then its most likely ops.")
    remap_prior: float = setting(0.0, "Weigh candidates by how much of the seed's weights their "
                                 "remap keeps: log-probability + W·log(kept) (0: off).", min=0.0,
                                 metavar="W")
    cost_scope: str | None = setting(None, "What --min/--max-madds count: blocks, backbone or "
                                     "detector, at --size [the search's cost size] [backbone].",
                                     metavar="SCOPE")


@dataclass
class DeriveResult:
    arch: ArchSpec
    probability: float  # of the argmax path
    skipped_layers: int
    warning: str | None  # the collapse warning
    seed: ArchSpec | None = None  # when the checkpoint records it
    task: str | None = None  # what the profiles count ("none": the backbone)
    size: tuple[int, int] | None = None
    profile: Profile | None = None  # of arch (when profiled)
    seed_profile: Profile | None = None
    top: list[dict] = field(default_factory=list)  # rank, probability|fitness, spec, madds
    latency_ms: float | None = None  # by the latency table, when one was given
    seed_latency_ms: float | None = None
    latency_table: LatencyTable | None = None
    profile_classes: int | None = None
    window: dict | None = None  # min/max MAdds, scope, cost, choices moved off the argmax
    unsearched: str | None = None  # said when the supernet was never searched

    @property
    def where(self) -> str:
        what = "backbone" if self.task == "none" else self.task
        return f"{what} {self.size[0]}x{self.size[1]}" if self.size else str(what)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"spec": self.arch.to_dict(), "probability": self.probability,
                             "task": self.task, "input": list(self.size or ()),
                             "madds": self.profile.madds, "params": self.profile.params,
                             "backbone_params": self.profile.params_parts["backbone"],
                             "skipped_layers": self.skipped_layers,
                             "warnings": [w for w in (self.unsearched, self.warning) if w]}
        if self.latency_table is not None:
            d["latency_ms"] = self.latency_ms
        if self.seed_profile is not None:
            d["seed"] = {"spec": self.seed.to_dict(), "madds": self.seed_profile.madds,
                         "params": self.seed_profile.params}
            if self.latency_table is not None:
                d["seed"]["latency_ms"] = self.seed_latency_ms
        if self.window is not None:
            d["window"] = self.window
        if self.top:
            d["top"] = [{**{k: v for k, v in t.items() if k != "spec"},
                         "spec": t["spec"].to_dict()} for t in self.top]
        return d

    def report(self, show: bool = True) -> Report:
        """The collapse warning; when profiled and ``show``, the architecture (ops per layer,
        widths, beside the seed's) and its MAdds/params against the seed; the top-K list."""
        report: Report = [f"warning: {w}" for w in (self.unsearched, self.warning) if w]
        if show and self.profile is not None:
            report += self._architecture()
        if self.top:
            report.append(self._top_table())
        return report

    def _architecture(self) -> Report:
        arch, seed = self.arch, self.seed
        rows = []
        for s, st in enumerate(arch.stages):
            row = [str(s), str(st.stride), str(st.out), str(st.depth), _ops_text(st)]
            if seed is not None and s < len(seed.stages):
                sd = seed.stages[s]
                row.append(f"{sd.out} x{sd.depth} "
                           f"{_ops_text(sd) if sd.ops != st.ops else '(same)'}")
            rows.append(tuple(row))
        seed_col = ("seed",) if seed is not None else ()
        report: Report = [Table(
            f"derived architecture (path probability {self.probability:.3g})",
            ("stage", "stride", "width", "depth", "ops (per layer)", *seed_col), rows,
            right=("stage", "stride"), dim=seed_col)]

        def line(name: str, p: Any, ms: float | None = None) -> str:
            lat = ""
            if self.latency_table is not None:
                lat = (f", {ms:.2f} ms predicted" if ms is not None
                       else ", latency: not in the table")
            return (f"{name}: {p.madds / 1e6:,.1f}M MAdds{lat}, {p.params / 1e6:.2f}M params "
                    f"(backbone {p.params_parts['backbone'] / 1e6:.2f}M)")

        report.append(line(f"derived ({self.where})", self.profile, self.latency_ms))
        if self.seed_profile is not None:
            ratio = self.profile.madds / max(self.seed_profile.madds, 1)
            report.append(line("seed", self.seed_profile, self.seed_latency_ms)
                          + f"; derived/seed MAdds {ratio:.3f}")
        return report

    def _top_table(self) -> Table:
        """Rank, probability/fitness, MAdds, and the ops and width of every stage in which the
        K architectures differ (the stages they share are named once in the caption)."""
        from fnacli.search.arch import differing_stages, stage_text

        tops = self.top
        key = "probability" if "probability" in tops[0] else "fitness"
        specs = [t["spec"] for t in tops]
        differ = differing_stages(specs)
        lat = ("latency",) if self.latency_table is not None else ()
        rows = [(str(t["rank"]), f"{t[key]:.4g}", f"{t['madds'] / 1e6:,.1f}M",
                 *([f"{ms:.2f} ms" if (ms := t.get("latency_ms")) is not None else "-"]
                   * len(lat)),
                 *(stage_text(t["spec"].stages[s]) if s < len(t["spec"].stages) else "-"
                   for s in differ)) for t in tops]
        same = [s for s in range(len(specs[0].stages)) if s not in differ]
        caption = []
        if same:
            caption.append(f"the same in all: stage{'s' if len(same) > 1 else ''} "
                           + ", ".join(f"{s} ({stage_text(specs[0].stages[s])})"
                                       for s in same))
        if key == "probability":
            caption.append(f"total probability of the listed: {sum(t[key] for t in tops):.4g}")
        return Table(f"top {len(tops)} ({self.where})",
                     ("rank", key, "MAdds", *lat, *(f"stage {s} (width: ops)" for s in differ)),
                     rows, right=("rank", key, "MAdds", *lat),
                     caption="; ".join(caption) or None)


def _ops_text(stage: Any) -> str:
    return " ".join(f"k{o.kernel}_e{o.expand}" for o in stage.ops)


@step(DeriveConfig)
def derive(cfg: DeriveConfig) -> DeriveResult:
    """The architecture a search chose: argmax α per layer (skips dropped) and argmax β per
    stage of ``checkpoint``, optionally its MAdds/params against the seed (``profile``), the
    K most likely architectures (``top``), a MAdds window, and pictures (``plot``,
    ``diagram``). ``result.arch`` is the ``ArchSpec``."""
    from fnacli.io import check_writable
    from fnacli.plots import PICTURE_FORMATS
    from fnacli.search import arch as A
    from fnacli.search.supernet_io import read_supernet

    say = Reporter(cfg.on_message)
    for opt, dest in (("--plot", cfg.plot), ("--diagram", cfg.diagram)):
        if dest is not None and str(dest) == "-":
            raise UserError(f"{opt}: give a file name (stdout carries the spec)")
        if dest is not None:
            if Path(dest).suffix.lower() not in PICTURE_FORMATS:
                raise UserError(f"{opt} {dest}: give a .svg, .png or .pdf file name")
            check_writable(dest, cfg.force)  # refuse before any work
    table = None
    if cfg.latency_table is not None:
        from fnacli.cost.latency import read_latency_table
        from fnacli.cost.target import PLAIN
        from fnacli.tasks import lookup

        table = read_latency_table(cfg.latency_table, lambda n: lookup(n, PLAIN), cfg.force)
    if cfg.by not in DERIVE_BY:
        raise UserError(f"--by: expected {' or '.join(DERIVE_BY)}, got {cfg.by!r}")
    window = _window_limits(cfg)
    if _is_plain_spec(cfg.checkpoint):
        return _plain_spec(cfg, window, table, say)
    ck = read_supernet(cfg.checkpoint)
    searched = ck.meta.get("search", {})
    depth = ck.min_depth if cfg.min_depth is None else cfg.min_depth
    if cfg.remap_prior:
        _apply_remap_prior(ck, cfg.remap_prior)
    if window:
        arch, path, prob, window_info = _derive_within(ck, searched, cfg, depth, window, say,
                                                       table)
    else:
        rule = A.derive_by_depth if cfg.by == "depth" else A.derive
        arch, path, prob = rule(ck.space, ck.alpha, ck.beta, depth)
        window_info = None
    if cfg.plot is not None:
        _plot(ck, cfg, depth, say)
        say(f"wrote the search plot to {cfg.plot}")
    if cfg.diagram is not None:
        _diagram(arch, ck.seed_spec, f"derived from {Path(cfg.checkpoint).name}", cfg.diagram,
                 say)
    # a supernet without a search record holds α/β logits: the differentiable remedies apply
    warning = A.collapse_warning(ck.space, path,
                                 strategy=searched.get("strategy", "differentiable"))
    result = DeriveResult(arch, prob, A.skip_report(ck.space, path)[0], warning, ck.seed_spec,
                          window=window_info, unsearched=_unsearched_warning(ck, searched))
    if cfg.profile or cfg.top:
        _profile(result, ck, searched, cfg, depth, say)
        if table is not None:
            _latency(result, table, cfg.latency_table)
    return result


def _apply_remap_prior(ck: Any, weight: float) -> None:
    """The checkpoint's α with the remapping prior (``fnacli.search.remap_prior``) added."""
    from fnacli.search.remap_prior import adjust_alpha

    if ck.seed_spec is None:
        raise UserError("--remap-prior: the checkpoint does not record the seed it was expanded "
                        "from")
    ck.alpha = adjust_alpha(ck.space, ck.seed_spec, ck.alpha, weight)


def _unsearched_warning(ck: Any, searched: dict) -> str | None:
    """A supernet straight from 'fnacli expand': its α/β are their initial noise, so its
    argmax is a random architecture, not a searched one."""
    if ck.kind != "supernet" or searched:
        return None
    return ("this supernet has not been searched: its α/β are the initial noise of 'fnacli "
            "expand', so the derived architecture is a random one (run 'fnacli search' first, "
            "or 'fnacli sample' for random architectures on purpose)")


def _is_plain_spec(arg: str | Path) -> bool:
    """A built-in name, an arch JSON file or '-': no search to derive from (--diagram and
    --show of a spec as it is)."""
    from fnacli.pipeline.profile import _is_json_file

    text = str(arg)
    path = Path(text)
    return text == "-" or (path.is_file() and _is_json_file(path)) or (
        not path.exists() and "/" not in text and path.suffix.lower() != ".safetensors")


def _plain_spec(cfg: DeriveConfig, window: Any, table: Any, say: Reporter) -> DeriveResult:
    """The architecture of a spec as it is (probability 1): its diagram and its costs."""
    from fnacli.spec import as_arch

    bounds = ("min_latency/max_latency" if window and window.metrics == ("latency",)
              else "min_madds/max_madds")
    for given, name in ((cfg.plot, "plot"), (cfg.top, "top"), (window, bounds),
                        (cfg.min_depth, "min_depth")):
        if given:
            raise UserError(f"{name}: {cfg.checkpoint} is an architecture, not a search",
                            f"--{name.replace('_', '-').replace('/', '/--')}: "
                            f"{cfg.checkpoint} is an architecture, not a search")
    arch = as_arch(cfg.checkpoint)
    if cfg.diagram is not None:
        _diagram(arch, None, str(cfg.checkpoint), cfg.diagram, say)
    result = DeriveResult(arch, 1.0, 0, None)
    if cfg.profile:
        from fnacli.cost.table import profile_specs

        task = cfg.task or _default_task()
        size = as_size(cfg.size) if cfg.size else _task_size(task)
        classes = cfg.num_classes or 80
        result.task, result.size, result.profile_classes = task, size, classes
        from fnacli.pipeline.profile import cost_target

        result.profile = profile_specs([arch], cost_target(task), size, classes)[0]
        if table is not None:
            _latency(result, table, cfg.latency_table)
    return result


def _default_task() -> str:
    from fnacli.tasks import task_names

    return task_names()[0]


def _task_size(task: str) -> tuple[int, int]:
    from fnacli.tasks import get_task, is_task

    return tuple(get_task(task).recipe.size) if is_task(task) else (224, 224)


def _diagram(arch: ArchSpec, seed: ArchSpec | None, title: str, dest: str | Path,
             say: Reporter) -> None:
    from fnacli.plots import diagram_figure, save_figure

    save_figure(diagram_figure(arch, seed, title=title), dest)
    say(f"wrote the architecture diagram to {dest}")


def _window_limits(cfg: DeriveConfig) -> Budget | None:
    """--min-madds/--max-madds parsed (absolute, or relative to the seed: 60%) and, when
    absolute, checked before the checkpoint is read."""
    from fnacli.budget import Budget
    from fnacli.cost.space import check_scope

    latency = cfg.min_latency is not None or cfg.max_latency is not None
    if latency and (cfg.min_madds is not None or cfg.max_madds is not None):
        raise UserError("--min/--max-latency and --min/--max-madds: give one window (the "
                        "derivation moves choices along one cost)")
    if latency and cfg.latency_table is None:
        raise UserError("--min/--max-latency: give --latency-table (the predicted latency)")
    if cfg.min_madds is None and cfg.max_madds is None and not latency:
        if cfg.cost_scope is not None:
            raise UserError("--cost-scope: only with --min-madds/--max-madds")
        return None
    if cfg.cost_scope is not None:
        if latency:
            raise UserError("--cost-scope: a latency window is the whole network's predicted "
                            "latency; the scope is for --min-madds/--max-madds")
        check_scope(cfg.cost_scope)
    budget = (Budget.of(min_latency=cfg.min_latency, max_latency=cfg.max_latency) if latency
              else Budget.of(min_madds=cfg.min_madds, max_madds=cfg.max_madds))
    if not budget.relative:
        budget.resolve()  # a minimum above the maximum: refused now
    return budget


def _derive_within(ck: Any, searched: dict, cfg: DeriveConfig, depth: int, budget: Budget,
                   say: Reporter, table: Any = None) -> tuple[Any, Any, float, dict]:
    """The most likely architecture (greedy, ``search.arch.derive_within``) whose MAdds over
    the scope, at the search's cost size, lie within the budget (a relative one taken of the
    seed's MAdds over the same scope); or, for a latency budget, whose predicted latency by
    ``table`` (the whole network) does."""
    from fnacli.search import arch as A
    from fnacli.search.evolution import Encoding, check_reachable

    if searched.get("strategy") in ("evolution", "random"):
        raise UserError("--min-madds/--max-madds: a one-shot search picks its architecture by "
                        "fitness; give the window to 'fnacli search' instead")
    w = (_latency_window(ck, table) if budget.metrics == ("latency",)
         else _madds_window(ck, searched, cfg))
    reference = None
    if budget.relative:
        if ck.seed_spec is None:
            detail = (f"a relative budget is taken of the seed's {w.what}, and this checkpoint "
                      f"records no seed; give {w.absolute}")
            raise UserError(f"{w.names}: {detail}", f"{w.flags}: {detail}")
        reference = {w.metric: w.cost(ck.seed_spec)}
    lo, hi = budget.resolve(reference).bounds[w.metric]
    if w.metric == "madds":
        # (not for latency: a measured table need not be monotone in width or depth, so the
        # MAdds rule for the cheapest architecture is no bound there)
        check_reachable(Encoding(ck.space), w.cost, lo, hi)
    start = (A.derive_by_depth(ck.space, ck.alpha, ck.beta, depth)[1] if cfg.by == "depth"
             else None)
    arch, path, prob, moves = A.derive_within(ck.space, ck.alpha, ck.beta, w.cost, lo, hi,
                                              depth, start, what=w.what, flags=w.flags,
                                              text=w.text)
    c = w.cost(arch)
    if moves:
        say(f"note: {moves} choice{'s' if moves != 1 else ''} moved off the argmax to bring "
            f"the architecture within {w.span(lo, hi, c)}")
    return arch, path, prob, {**w.info(lo, hi, c), "moved": moves,
                              **({w.seed_key: reference[w.metric]} if reference else {})}


@dataclass
class _Window:
    """How a derivation window counts: its cost and the words and keys that report it."""

    metric: str  # the Budget metric
    cost: Any  # ArchSpec -> float
    what: str  # "MAdds", "predicted latency"
    names: str  # the parameters (library errors)
    flags: str  # the flags (CLI errors)
    absolute: str  # what an absolute budget is
    text: Any  # float -> str
    span: Any  # (lo, hi, cost) -> the note's words
    info: Any  # (lo, hi, cost) -> the report's window fields
    seed_key: str


def _madds_window(ck: Any, searched: dict, cfg: DeriveConfig) -> _Window:
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.pipeline.search_options import ONESHOT_COST_SCOPE
    from fnacli.search.evolution import window_text
    from fnacli.tasks import get_task, task_names

    task = get_task(cfg.task or searched.get("task") or task_names()[0])
    size = (as_size(cfg.size) if cfg.size else
            tuple(searched.get("cost_size") or searched.get("size") or task.recipe.size))
    scope = cfg.cost_scope or ONESHOT_COST_SCOPE
    lut = load_or_build_lut(ck.space, task, size,
                            cfg.num_classes or searched.get("num_classes") or 80)
    return _Window(
        "madds", lambda arch: lut.arch_cost(arch, scope), "MAdds", "min_madds/max_madds",
        "--min-madds/--max-madds", "MAdds", lambda c: f"{c / 1e6:.4g}M",
        lambda lo, hi, c: (f"{window_text(lo, hi)} MAdds ({scope} at {size[0]}x{size[1]}: "
                           f"{c / 1e6:.4g}M)"),
        lambda lo, hi, c: {"min_madds": lo, "max_madds": hi, "cost_scope": scope,
                           "cost_size": list(size), "madds": c}, "seed_madds")


def _latency_window(ck: Any, table: Any) -> _Window:
    if table.space.to_dict() != ck.space.to_dict():
        raise UserError("--latency-table: measured for another search space than the "
                        "checkpoint's; measure one with 'fnacli latency --space' of it")

    def span(lo: float | None, hi: float | None, c: float) -> str:
        where = f"{lo or 0:.4g}-{hi:.4g} ms" if hi is not None else f"at least {lo:.4g} ms"
        return f"{where} predicted latency ({c:.4g} ms)"

    return _Window(
        "latency", table.latency_ms, "predicted latency", "min_latency/max_latency",
        "--min-latency/--max-latency", "a time", lambda c: f"{c:.4g} ms", span,
        lambda lo, hi, c: {"min_latency_ms": lo, "max_latency_ms": hi, "latency_ms": c},
        "seed_latency_ms")


def _latency(result: DeriveResult, table: Any, source: str | Path) -> None:
    """Predicted latency of the derived (and seed, and top) architectures; None for one the
    table does not cover (the seed is often outside the space)."""
    from fnacli.cost.latency import check_usage, predict_ms

    check_usage(table, result.task, result.size, result.profile_classes, str(source))
    result.latency_table = table
    result.latency_ms = predict_ms(table, result.arch)
    if result.seed is not None:
        result.seed_latency_ms = predict_ms(table, result.seed)
    for t in result.top:
        t["latency_ms"] = predict_ms(table, t["spec"])


def _profile(result: DeriveResult, ck: Any, searched: dict, cfg: DeriveConfig, depth: int,
             say: Reporter) -> None:
    """MAdds/params for the search's task and size (from its metadata by default)."""
    from fnacli.cost.table import profile_specs
    from fnacli.tasks import get_task, is_task, task_names

    task = cfg.task or searched.get("task") or task_names()[0]
    if not (is_task(task) or task == "none"):
        raise UserError(f"--task: expected {', '.join(task_names())} or none, got {task!r}")
    if cfg.size:
        size = as_size(cfg.size)
    elif searched.get("size"):
        size = tuple(searched["size"])
    else:
        size = get_task(task).recipe.size if is_task(task) else (224, 224)
    num_classes = cfg.num_classes or searched.get("num_classes") or 80
    specs = [result.arch] + ([result.seed] if result.seed is not None else [])
    tops = _top(ck, searched, cfg.top, depth, say) if cfg.top else []
    profiles = profile_specs(specs + [t["spec"] for t in tops], get_task(task) if is_task(task)
                             else task, size, num_classes)
    for t, p in zip(tops, profiles[len(specs):], strict=True):
        t["madds"] = p.madds
    result.task, result.size, result.top = task, size, tops
    result.profile_classes = num_classes
    result.profile = profiles[0]
    result.seed_profile = profiles[1] if result.seed is not None else None


def _top(ck: Any, searched: dict, k: int, depth: int, say: Reporter) -> list[dict]:
    """The K most likely architectures (α/β), or the K best a one-shot search recorded."""
    from fnacli.search import arch as A
    from fnacli.spec import ArchSpec

    if searched.get("strategy") in ("evolution", "random") and "top" in searched:
        return [{"rank": c["rank"], "fitness": c["fitness"],
                 "spec": ArchSpec.from_dict(c["arch"], f"{ck.kind} top[{c['rank']}]")}
                for c in searched["top"][:k]]
    a, b = A.probs(ck.space, ck.alpha, ck.beta, depth)
    ranked, exact = A.top_k(ck.space, a, b, k)
    if not exact:
        say("note: the space is too large to enumerate a stage exactly; the top list is a "
            "beam-search approximation")
    return [{"rank": r + 1, "probability": p, "spec": s} for r, (p, s) in enumerate(ranked)]


def _plot(ck: Any, cfg: DeriveConfig, depth: int, say: Reporter) -> None:
    """SEARCHED.arch.svg again: every epoch of the metrics file, or the checkpoint's α/β."""
    from fnacli.plots import read_epoch_records, save_figure, search_figure
    from fnacli.search import arch as A
    from fnacli.search.differentiable import prob_report

    searched = ck.meta.get("search", {})
    if searched.get("strategy") in ("evolution", "random"):
        _fitness_plot(ck, cfg, searched)
        return
    name = Path(cfg.checkpoint).name
    source = Path(cfg.metrics) if cfg.metrics else Path(f"{cfg.checkpoint}.metrics.jsonl")
    if cfg.metrics and not source.is_file():
        raise UserError(f"--metrics {cfg.metrics}: no such file")
    records = read_epoch_records(source, ck.space) if source.is_file() else []
    if records:
        note = f"{len(records)} epoch{'s' if len(records) != 1 else ''} from {source.name}"
    else:  # no history: one column of what the checkpoint holds now
        done = searched.get("epochs_done")
        probs = A.probs(ck.space, ck.alpha, ck.beta, depth)
        records = [{"epoch": done or None, **prob_report(ck.space, *probs)}]
        note = f"no metrics file ({source.name}): the checkpoint's current α/β"
        say(f"note: {note}")
    what = f"{searched['task']} {searched['size'][0]}x{searched['size'][1]}, " if (
        searched.get("task") and searched.get("size")) else ""
    save_figure(search_figure(
        ck.space, records, title=f"α/β over the search: {name}",
        subtitle=f"{ck.space.name} space, {what}{note}",
        warmup_epochs=searched.get("warmup_epochs")), cfg.plot)


def _fitness_plot(ck: Any, cfg: DeriveConfig, searched: dict) -> None:
    """A one-shot search trains no α/β: its plot is every evaluated candidate's fitness
    against its MAdds, from SEARCHED.history.jsonl (or ``metrics``)."""
    from fnacli.plots import fitness_figure, read_candidates, save_figure

    source = Path(cfg.metrics) if cfg.metrics else Path(f"{cfg.checkpoint}.history.jsonl")
    if not source.is_file():
        raise UserError(f"plot: {source}: no such file (a one-shot search's plot is drawn from "
                        "its history; give metrics=HISTORY.jsonl)",
                        f"--plot: {source}: no such file (a one-shot search's plot is drawn "
                        "from its history; give --metrics HISTORY.jsonl)")
    candidates = read_candidates(source)
    if not candidates:
        raise UserError(f"{source}: no evaluated candidates to plot")
    top = searched.get("top") or []
    chosen = top[0] if top and "madds" in top[0] else None
    metric = searched.get("metric") or "fitness"
    scope = searched.get("cost_scope", "backbone")
    save_figure(fitness_figure(
        candidates, title=f"{searched['strategy']} search: {Path(cfg.checkpoint).name}",
        subtitle=f"{len(candidates)} candidates from {source.name}; MAdds of the {scope}",
        chosen=chosen, limits=(searched.get("min_madds"), searched.get("max_madds")),
        metric=metric), cfg.plot)
