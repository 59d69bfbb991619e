"""Random architectures of a search space under a budget, without a supernet: DetNAS's random
baseline's draw as a step; and the costs of a space's cheapest, seed and most costly
architectures (``space_costs``), so that a user sees which budgets are reachable.

Costs come from the space's cost table (``fnacli.cost.lut``) at the task and input size: MAdds
over ``cost_scope``, params (the backbone's, or the whole model's for the detector scope)
and, given a latency table, the predicted latency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Size, as_size, step
from fnacli.report import Report, Table
from fnacli.settings import setting

if TYPE_CHECKING:
    from fnacli.budget import Window
    from fnacli.spec import ArchSpec, SpaceSpec

DEFAULT_REFERENCE = "mobilenetv2"  # the seed the built-in spaces are built around
Costs = dict[str, float | None]


@dataclass
class SampleConfig:
    space: str | Path | SpaceSpec | dict = setting(
        "fna", "Search space: a built-in name, a JSON file or '-'.", metavar="SPACE",
        api="Also a SpaceSpec or its dict.")
    n: int = setting(50, "How many different architectures to draw.", flags=("--num", "-n"),
                     min=1, metavar="N")
    output: str | Path | None = setting(
        None, "Folder for the specs (random-000.json, …), or '-' for JSON lines on stdout "
        "(one spec per line).", metavar="DIR|-", api="None: keep them in result.specs only.")
    task: str | None = setting(None, "What the costs count: a detector or segmenter, or none "
                               "(the backbone) [ssdlite].")
    size: Size | None = setting(None, "Input size of the costs [the task's search size].")
    num_classes: int | None = setting(None, "Classes of the task [its default].", min=1)
    cost_scope: str = setting("backbone", "What the MAdds limits count: blocks (the searched "
                              "stages), backbone (DetNAS) or detector.", metavar="SCOPE")
    max_madds: str | float | None = setting(None, "MAdds limit: 300M, 1.2G, or 60% of the "
                                            "reference's.", metavar="MADDS")
    min_madds: str | float | None = setting(None, "Lower MAdds limit (a matched-cost window).",
                                            metavar="MADDS")
    max_params: str | float | None = setting(None, "Parameter limit: 2.5M, or 60% of the "
                                             "reference's.", metavar="PARAMS")
    min_params: str | float | None = setting(None, "Lower parameter limit.", metavar="PARAMS")
    max_latency: str | float | None = setting(None, "Latency limit by --latency-table: 12ms, or "
                                              "60% of the reference's.", metavar="MS")
    latency_table: str | Path | None = setting(None, "A table from 'fnacli latency' (same task "
                                               "and size): predicted latency beside MAdds.",
                                               metavar="TABLE")
    reference: str | Path | ArchSpec | None = setting(
        None, "What relative budgets (60%) are relative to: a built-in name, spec file or seed "
        f"checkpoint [{DEFAULT_REFERENCE}, the seed of the built-in spaces].", metavar="SPEC")
    seed: int = setting(0, "Random seed of the draw: same seed, same architectures.")
    max_tries: int = setting(1000, "Draws per architecture before giving up.", min=1,
                             metavar="N")
    force: bool = setting(False, "Overwrite spec files already in DIR.")
    progress: bool = setting(False, api="A progress bar on stderr while the cost table fills.")


@dataclass
class SampleResult:
    space: str
    specs: list[ArchSpec]
    costs: list[Costs]  # per spec: madds (over the scope), params, latency (or None)
    window: Window
    reference: dict[str, Any] | None  # name and costs relative budgets were taken of
    draws: int
    task: str
    size: tuple[int, int]
    cost_scope: str
    files: list[str] = field(default_factory=list)  # the spec files written

    def to_dict(self) -> dict:
        return {"space": self.space, "task": self.task, "input": list(self.size),
                "cost_scope": self.cost_scope, "budget": self.window.to_dict(),
                "reference": self.reference, "draws": self.draws,
                "architectures": [{"spec": s.to_dict(), **c, **({"file": f} if f else {})}
                                  for s, c, f in zip(self.specs, self.costs,
                                                     self.files or [None] * len(self.specs),
                                                     strict=True)]}

    def report(self) -> Report:
        lat = any(c.get("latency") is not None for c in self.costs)
        rows = [(str(i), _fmt(c["madds"]), _fmt(c["params"]),
                 *([f"{c['latency']:.2f} ms" if c.get("latency") is not None else "-"]
                   if lat else []))
                for i, c in enumerate(self.costs)]
        where = f"{self.task} {self.size[0]}x{self.size[1]}, MAdds of the {self.cost_scope}"
        report: Report = [Table(f"{len(self.specs)} random architectures of {self.space} "
                                f"({where}; {self.window.text()}; {self.draws} draws)",
                                ("#", "MAdds", "params", *(("latency",) if lat else ())), rows,
                                right=("#", "MAdds", "params", "latency"))]
        if self.files:
            folder = Path(self.files[0]).parent
            report.append(f"wrote {len(self.files)} specs to {folder}")
        return report


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e9:.2f}G" if v >= 1e9 else f"{v / 1e6:.2f}M"


class SpaceCosts:
    """The costs of a space's architectures at a task and input size, from its cost table:
    ``costs(arch)`` -> {madds (over the scope), params, latency (None without a table)}."""

    def __init__(self, space: SpaceSpec, task: str, size: tuple[int, int],
                 num_classes: int | None, scope: str, latency_table: Any = None,
                 progress: bool = False) -> None:
        from fnacli.cost.lut import load_or_build_lut
        from fnacli.cost.space import check_scope
        from fnacli.pipeline.profile import cost_target

        self.space, self.scope = space, check_scope(scope)
        self.lut = load_or_build_lut(space, cost_target(task), size, num_classes,
                                     progress=progress)
        self.latency_table = latency_table

    def __call__(self, arch: ArchSpec) -> Costs:
        p = self.lut.profile(arch)
        params = p.params if self.scope == "detector" else p.params_parts["backbone"]
        latency = None
        if self.latency_table is not None:
            from fnacli.cost.latency import predict_ms

            latency = predict_ms(self.latency_table, arch)
        return {"madds": self.lut.arch_cost(arch, self.scope), "params": float(params),
                "latency": latency}

    def extremes(self) -> tuple[ArchSpec, ArchSpec]:
        """The space's least and most costly architectures (by the scope's MAdds; every cost
        grows with width, depth, kernel and expansion, so they are the extremes of params and
        latency too)."""
        from fnacli.search.evolution import Encoding

        enc = Encoding(self.space)

        def madds(arch: ArchSpec) -> float:
            return self.lut.arch_cost(arch, self.scope)

        return enc.arch(enc.cheapest(madds)), enc.arch(enc.dearest(madds))


def resolve_setting(task: str | None, size: Size | None, num_classes: int | None
                    ) -> tuple[str, tuple[int, int], int]:
    """(task, input size, classes) the costs are counted at: the task's search size."""
    from fnacli.cost.target import default_classes
    from fnacli.pipeline.profile import cost_target, count_tasks
    from fnacli.tasks import get_task, is_task, task_names

    name = task or task_names()[0]
    if name not in count_tasks():
        raise UserError(f"task: expected one of {', '.join(count_tasks())}, got {name!r}",
                        f"--task: expected one of {', '.join(count_tasks())}, got {name!r}")
    default = get_task(name).recipe.size if is_task(name) else (224, 224)
    return name, as_size(size, min_side=1) or tuple(default), num_classes or default_classes(
        cost_target(name))


def load_reference(reference: Any) -> tuple[str, ArchSpec]:
    """(name, spec) of what relative budgets are relative to."""
    from fnacli.pipeline.profile import named_specs

    ref = DEFAULT_REFERENCE if reference is None else reference
    ((name, spec),) = named_specs(ref if not isinstance(ref, list | tuple) else ref[:1])
    return name, spec


def latency_table_for(path: str | Path | None, task: str, size: tuple[int, int],
                      classes: int, force: bool = False) -> Any:
    if path is None:
        return None
    from fnacli.cost.latency import check_usage
    from fnacli.pipeline.profile import cost_target, read_latency

    table = read_latency(path, force)
    check_usage(table, cost_target(task), size, classes, str(path))
    return table


@step(SampleConfig)
def sample(cfg: SampleConfig) -> SampleResult:
    """``n`` different architectures drawn uniformly from ``space`` (rejection sampling:
    every one inside all the given limits), with their costs; written as spec files into the
    folder ``output`` (nothing else goes there), as JSON lines to stdout (``'-'``), or kept in
    ``result.specs``. Limits no architecture meets are refused before the draw, naming the
    least each can be."""
    from fnacli.budget import Budget
    from fnacli.spec import as_space

    budget = Budget.of(max_madds=cfg.max_madds, min_madds=cfg.min_madds,
                       max_params=cfg.max_params, min_params=cfg.min_params,
                       max_latency=cfg.max_latency)
    if cfg.max_latency is not None and cfg.latency_table is None:
        raise UserError("max_latency: needs latency_table (a table from 'fnacli latency')",
                        "--max-latency: needs --latency-table (a table from 'fnacli latency')")
    folder = _check_output(cfg.output, cfg.n, cfg.force)
    task, size, classes = resolve_setting(cfg.task, cfg.size, cfg.num_classes)
    space = as_space(cfg.space)
    name = str(cfg.space) if isinstance(cfg.space, str | Path) else space.name
    costs = SpaceCosts(space, task, size, classes, cfg.cost_scope,
                       latency_table_for(cfg.latency_table, task, size, classes),
                       progress=cfg.progress)
    reference: dict[str, Any] | None = None
    if budget.relative:
        ref_name, ref_spec = load_reference(cfg.reference)
        reference = {"name": ref_name, **costs(ref_spec)}
    window = budget.resolve(reference)
    cheapest, dearest = costs.extremes()
    window.check_reachable(costs(cheapest), costs(dearest), f"space {name}")
    specs, found, draws = _draw(space, costs, window, cfg.n, cfg.seed, cfg.max_tries)
    result = SampleResult(name, specs, found, window, reference, draws, task, size,
                          cfg.cost_scope)
    if folder is not None:
        from fnacli.io import write_output

        folder.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(specs):
            path = folder / f"random-{i:03d}.json"
            write_output(str(path), s.to_json(), True)
            result.files.append(str(path))
    return result


def _check_output(output: str | Path | None, n: int, force: bool) -> Path | None:
    """The folder, refused before any work when it holds spec files of another draw."""
    if output is None or str(output) == "-":
        return None
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output: {output} is a file; give a folder for the specs",
                        f"-o: {output} is a file; give a folder for the specs")
    taken = [folder / f"random-{i:03d}.json" for i in range(n)]
    if not force and any(p.exists() for p in taken):
        raise UserError(f"{output}: already holds random-*.json specs (force=True "
                        "overwrites)", f"{output}: already holds random-*.json specs "
                        "(--force overwrites)")
    return folder


def _draw(space: SpaceSpec, costs: SpaceCosts, window: Window, n: int, seed: int,
          max_tries: int) -> tuple[list[ArchSpec], list[Costs], int]:
    """Rejection sampling of ``n`` different architectures inside ``window``."""
    from fnacli.search.evolution import Encoding, distinct_draws

    enc = Encoding(space)
    specs: list[ArchSpec] = []
    found: list[Costs] = []
    drawn: dict[str, list[float]] = {m: [] for m in window.bounds}  # for the message
    draws = max_tries * n  # all of them, unless n are found first
    for made, g in distinct_draws(enc, random.Random(seed), max_tries * n):
        arch = enc.arch(g)
        c = costs(arch)
        for m, values in drawn.items():
            if c.get(m) is not None:
                values.append(c[m])  # type: ignore[arg-type]
        if window.admits(c):
            specs.append(arch)
            found.append(c)
            if len(specs) == n:
                draws = made
                break
    if len(specs) < n:
        from fnacli.budget import LABELS, format_value

        spread = "; ".join(f"{LABELS[m]} {format_value(m, min(v))}-{format_value(m, max(v))}"
                           for m, v in drawn.items() if v)
        detail = (f"only {len(specs)} different architectures inside {window.text()} in "
                  f"{draws} draws (the draws spanned {spread}): widen the limits or lower")
        raise UserError(f"n {n}: {detail} n", f"-n {n}: {detail} -n")
    return specs, found, draws


def profile_space(space: str | Path | SpaceSpec | dict, task: str = "none",
                  size: Size | None = None, num_classes: int | None = None,
                  reference: str | Path | ArchSpec | None = None, progress: bool = False
                  ) -> Any:
    """Params and MAdds (``fnacli.profile``'s ``ProfileResult``) of the space's cheapest
    architecture, the seed (``reference``, default MobileNetV2) and its most costly one, at
    ``task`` and ``size``: which budgets a search of the space can meet."""
    from fnacli.pipeline.profile import default_size, profile
    from fnacli.spec import as_space

    space_spec = as_space(space)
    t, sz, classes = resolve_setting(task, size, num_classes)
    sz = as_size(size, min_side=1) or default_size(t)
    costs = SpaceCosts(space_spec, t, sz, classes, "detector", progress=progress)
    cheapest, dearest = costs.extremes()
    ref_name, ref = load_reference(reference)
    return profile({"cheapest": cheapest, f"seed ({ref_name})": ref, "dearest": dearest}, t,
                   sz, classes)
