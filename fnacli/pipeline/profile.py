"""Params and MAdds of architectures under a task, and the cost lookup table (LUT) of a
search space (``fnacli.cost``).

Tasks: ``none`` (the backbone with its 1x1 head conv), ``classifier`` (ImageNet) or a
registered task (``fnacli.tasks``); the default input size is the task's ``profile_size``
(224 for the backbone and the classifier).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Size, as_size, step
from fnacli.report import Report, Table
from fnacli.settings import setting
from fnacli.tasks import per_task, size_text

if TYPE_CHECKING:
    from fnacli.cost.count import Profile
    from fnacli.cost.latency import LatencyTable
    from fnacli.cost.lut import Lut
    from fnacli.spec import ArchSpec, SpaceSpec

BACKBONE_TASKS = ("none", "classifier")
BACKBONE_SIZE = (224, 224)


def count_tasks() -> tuple[str, ...]:
    from fnacli.tasks import task_names

    return (*BACKBONE_TASKS, *task_names())


def cost_target(name: str) -> Any:
    """What the cost package counts for ``--task NAME``: the task object, or the backbone
    alone / the classifier by name (``fnacli.cost.target``)."""
    from fnacli.tasks import lookup

    return lookup(name, BACKBONE_TASKS)


def read_latency(path: str | Path, force: bool = False) -> Any:
    """A latency table from ``path`` (``fnacli.cost.latency.read_latency_table``)."""
    from fnacli.cost.latency import read_latency_table

    return read_latency_table(path, cost_target, force)


def default_size(task: str) -> tuple[int, int]:
    from fnacli.tasks import get_task, is_task

    return get_task(task).profile_size if is_task(task) else BACKBONE_SIZE


def _check_task(task: str) -> str:
    if task not in count_tasks():
        raise UserError(f"--task: expected one of {', '.join(count_tasks())}, got {task!r}")
    return task


# one spec (ArchSpec, dict, name, file), a list of them or of (name, ArchSpec) pairs, or a
# dict {name: spec}
SpecsArg = Any


def named_specs(specs: SpecsArg) -> list[tuple[str, ArchSpec]]:
    """``profile``'s ``specs`` as (name, ArchSpec) pairs. A string is always one spec (a name
    or a file), never a sequence; a pair is a tuple of a name and an ``ArchSpec``."""
    from fnacli.spec import ArchSpec, as_arch

    if isinstance(specs, dict) and "schema" not in specs and "spec" not in specs:
        return [(str(k), as_arch(v, str(k))) for k, v in specs.items()]
    if isinstance(specs, str | Path | ArchSpec | dict):
        specs = [specs]
    if not isinstance(specs, list | tuple):
        raise UserError(f"specs: expected a spec or a list of specs, got {type(specs).__name__}")
    out = []
    for i, s in enumerate(specs):
        if (isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str)
                and isinstance(s[1], ArchSpec)):
            out.append((s[0], s[1]))
        elif isinstance(s, str | Path) and str(s) != "-" and Path(s).is_file() and \
                not _is_json_file(Path(s)):
            out += [(n, spec) for n, spec in load_specs([str(s)])]  # a checkpoint's spec
        else:
            out.append((str(s) if isinstance(s, str | Path) else f"spec{i}",
                        as_arch(s, f"specs[{i}]")))
    if not out:
        raise UserError("specs: give at least one architecture")
    return out


@dataclass
class ProfileConfig:
    specs: SpecsArg = setting(help="What to count: one architecture or a list of them, each an "
                              "ArchSpec, its dict, a built-in name (mobilenetv2, a timm name), "
                              "a JSON file or fnacli checkpoint (str or Path); a dict "
                              "{name: spec} names them.", api="Names default to the text given, "
                              "else spec0, spec1, …")
    task: str = setting("none", "What to count: the backbone (with its 1x1 head conv), the "
                        "ImageNet classifier, or a detector or segmenter [a model checkpoint's "
                        "own task, else none].")
    size: Size | None = setting(None, "Input size: 320 (square) or WIDTHxHEIGHT, e.g. 1088x800. "
                                "Default: a model checkpoint's own, else 224 (none, "
                                "classifier), "
                                f"{per_task(lambda t: size_text(t.profile_size))}.")
    num_classes: int | None = setting(None, "Classes: objects without background, or a "
                                      "segmenter's (default: a model checkpoint's, else "
                                      f"{per_task('default_classes')}); ImageNet classes for "
                                      "--task classifier (default 1000).", min=1)
    exact: bool = setting(False, "Trace every network with fvcore instead of summing the lookup "
                          "table (slower; same numbers).")
    progress: bool = setting(False, api="A progress bar on stderr while the table fills.")


@dataclass
class ProfileResult:
    task: str
    size: tuple[int, int]
    num_classes: int
    method: str  # "lookup table" or "fvcore trace"
    seconds: float
    profiles: list[Profile]
    latency_source: str | None = None  # where the latency table came from (``add_latency``)
    latency_table: LatencyTable | None = None  # whose predictions the profiles hold
    specs: list[ArchSpec] = field(default_factory=list, repr=False)  # one per profile

    def to_dicts(self) -> list[dict]:
        return [p.to_dict() for p in self.profiles]

    def report(self) -> Report:
        """One table: params and MAdds (backbone / neck / head) per spec, and the predicted
        latency when a latency table covered this setting."""
        extra = f", {self.num_classes} classes" if self.task != "none" else ""
        latency = ("latency",) if any("latency_ms" in p.extra for p in self.profiles) else ()
        lat = (f"; latency by {self.latency_source} ({self.latency_table.describe()})"
               if self.latency_table is not None and latency else "")
        columns = ("name", "params", "MAdds", "backbone", "neck", "head", *latency)
        rows = [(p.name, _fmt(p.params), _fmt(p.madds),
                 *(_fmt(p.madds_parts.get(part, 0)) for part in ("backbone", "neck", "head")),
                 *([f"{ms:.2f} ms" if (ms := p.extra.get("latency_ms")) is not None
                    else "not in table"] * len(latency))) for p in self.profiles]
        return [Table(f"{self.task} @ {self.size[0]}x{self.size[1]}{extra} ({self.method}, "
                      f"{self.seconds:.1f}s){lat}", columns, rows, right=columns[1:])]


def _fmt(n: float) -> str:
    """1234567 -> 1.23M (G, M, K); below 1000 as it is."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:.0f}"


@step(ProfileConfig)
def profile(cfg: ProfileConfig) -> ProfileResult:
    """Params and MAdds (conv + linear multiply-accumulates) of ``specs``, split into
    backbone / neck / head."""
    task = _check_task(cfg.task)
    size = as_size(cfg.size, min_side=1) or default_size(task)
    named = named_specs(cfg.specs)

    from fnacli.cost.count import profile_exact
    from fnacli.cost.table import profile_specs
    from fnacli.cost.target import default_classes

    target = cost_target(task)
    n_cls = cfg.num_classes or default_classes(target)
    start = time.perf_counter()
    if cfg.exact:
        profiles = [profile_exact(s, target, size, n_cls, name) for name, s in named]
    else:
        profiles = profile_specs([s for _, s in named], target, size, n_cls,
                                 [name for name, _ in named], progress=cfg.progress)
    return ProfileResult(task, size, n_cls, "fvcore trace" if cfg.exact else "lookup table",
                         time.perf_counter() - start, profiles, specs=[s for _, s in named])


@dataclass
class TableConfig:
    space: str | Path | SpaceSpec | dict = setting(
        help="The search space (built-in name, JSON file or '-'): with --lut, build its cost "
             "table; without, profile its cheapest, seed and most costly architectures (which "
             "budgets are reachable).", api="Also a SpaceSpec or its dict.")
    task: str = setting("none", api="What the table counts: none (the backbone), "
                        "classifier or a task.")
    size: Size | None = setting(None, api="Input size: N or (W, H) [the task's].")
    num_classes: int | None = setting(None, min=1, api="Classes [the task's default].")
    # None: the on-disk cache; '-': return the text only
    output: str | Path | None = setting(None, "With --lut: where to write the table ('-' for "
                                        "stdout).", metavar="OUT")
    force: bool = setting(False, "Overwrite OUT if it exists.")
    progress: bool = setting(False, api="A progress bar on stderr while the table fills.")


@dataclass
class TableResult:
    table: Lut
    where: str | None  # the file written, the cache file, "stdout"; None: the cache failed
    seconds: float
    text: str | None = None  # the table's JSON when output is '-'
    space: str = "the space"  # the space as given (name or file)
    task: str = "none"

    def report(self) -> Report:
        w, h = self.table.size
        return [f"lookup table: {self.space} / {self.task} @ {w}x{h}: "
                f"{len(self.table.layers)} layer entries, {len(self.table.fixed)} fixed-part "
                f"entries -> {self.where or 'not cached (the cache folder is not writable)'} "
                f"({self.seconds:.1f}s)"]


@step(TableConfig)
def build_table(cfg: TableConfig) -> TableResult:
    """The cost lookup table of a search space: written to ``output``, else built into (or
    read from) the cache."""
    from fnacli.io import check_writable, write_output
    from fnacli.spec import as_space

    task = _check_task(cfg.task)
    size = as_size(cfg.size, min_side=1) or default_size(task)
    space = as_space(cfg.space)
    out = None if cfg.output is None else str(cfg.output)
    if out and out != "-":
        check_writable(out, cfg.force)  # fail before the build, not after

    from fnacli.cost.lut import build_lut, load_or_build_lut

    start = time.perf_counter()
    text = None
    if out:
        table = build_lut(space, cost_target(task), size, cfg.num_classes, progress=cfg.progress)
        if out == "-":
            text = table.to_json()
        else:
            write_output(out, table.to_json(), cfg.force)
        where = "stdout" if out == "-" else out
    else:
        table = load_or_build_lut(space, cost_target(task), size, cfg.num_classes,
                                  progress=cfg.progress)
        where = str(table.cached_at) if table.cached_at else None
    name = str(cfg.space) if isinstance(cfg.space, str | Path) else "the space"
    return TableResult(table, where, time.perf_counter() - start, text, name, task)


# -- reading specs -----------------------------------------------------------------------------
def specs_from_text(text: str) -> list[tuple[str, ArchSpec]]:
    """One JSON document (a spec or a list of specs), or JSON lines with one spec each."""
    from fnacli.spec import ArchSpec

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # JSON lines, or not JSON: read line by line below
        doc = None
    if isinstance(doc, dict):
        return [("<stdin>", ArchSpec.from_dict(doc, "<stdin>"))]
    if isinstance(doc, list):
        return [(f"<stdin>[{i}]", ArchSpec.from_dict(d, f"<stdin>[{i}]"))
                for i, d in enumerate(doc)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name = f"<stdin>:{n}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{name}: not valid JSON ({e.msg} at column {e.colno}); expected one "
                            "spec document or JSON lines with one spec per line") from None
        except (ValueError, RecursionError):
            raise UserError(f"{name}: not valid JSON (nested too deeply or numbers too long); "
                            "expected one spec document or JSON lines with one spec per line"
                            ) from None
        out.append((name, ArchSpec.from_dict(d, name)))
    if not out:
        raise UserError("<stdin>: no spec given (empty input)")
    return out


def _foreign_weights(e: UserError) -> bool:
    """Whether ``read_checkpoint`` refused a file as weights fnacli did not write (a PyTorch
    pickle, a plain safetensors state dict), which may be a seed."""
    return any(t in str(e) for t in ("a PyTorch pickle", "without fnacli metadata"))


def _is_json_file(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    return head[:1] in (b"{", b"[")


# What a model checkpoint records of how it runs: (task, (width, height), classes).
Recorded = tuple[str, tuple[int, int], int]


def load_specs(args: list[str]) -> list[tuple[str, ArchSpec]]:
    """SPEC arguments: JSON files, '-' (stdin), built-in names, fnacli checkpoints, or seeds
    (torchvision/timm state dicts: the architecture inferred from their shapes)."""
    return [(name, spec) for name, spec, _ in load_recorded_specs(args)]


def load_recorded_specs(args: list[str]) -> list[tuple[str, ArchSpec, Recorded | None]]:
    """``load_specs`` plus, for a detector checkpoint, the task, input size and classes it
    was trained with (None for everything else)."""
    from fnacli.io import read_text_arg
    from fnacli.spec import load_arch

    if args.count("-") > 1:
        raise UserError("SPEC: '-' (stdin) can be given only once")
    out: list[tuple[str, ArchSpec, Recorded | None]] = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            out += [(n, s, None) for n, s in specs_from_text(read_text_arg("-", "SPEC")[0])]
        elif path.is_file() and not _is_json_file(path):
            from fnacli.model_checkpoint import MODEL_KINDS, read_model_checkpoint

            try:
                ck = read_model_checkpoint(path)
            except UserError as e:  # not fnacli's: a seed's state dict, its spec inferred
                if not _foreign_weights(e):
                    raise
                from fnacli.pipeline.remap import seed_spec

                out.append((arg, seed_spec(arg), None))
                continue
            if ck.spec is None:
                hint = " (derive an architecture first: fnacli derive)" if ck.space else ""
                raise UserError(f"{arg}: this {ck.kind} checkpoint carries no architecture "
                                f"spec{hint}")
            recorded = None
            if ck.kind in MODEL_KINDS:  # a detector's or a segmenter's own settings
                from fnacli.model_checkpoint import detector_info

                info = detector_info(ck, path)
                recorded = (info.task, info.size, info.num_classes)
            out.append((arg, ck.spec, recorded))
        else:
            out.append((arg, load_arch(arg), None))
    return out


def settings_for(recorded: Recorded | None, task: str | None, size: Size | None,
                 num_classes: int | None) -> tuple[str, tuple[int, int] | None, int | None]:
    """(task, size, classes) to count one spec at: the options given, else what a detector
    checkpoint records (when its task is the one counted), else the defaults (None)."""
    t = task or (recorded[0] if recorded else "none")
    own = recorded is not None and recorded[0] == t
    sz = as_size(size, min_side=1) if size else (recorded[1] if own else None)
    return t, sz, num_classes or (recorded[2] if own else None)


def profile_recorded(named: list[tuple[str, ArchSpec, Recorded | None]], task: str | None = None,
                     size: Size | None = None, num_classes: int | None = None,
                     exact: bool = False, progress: bool = False) -> list[ProfileResult]:
    """``profile`` per setting: detector checkpoints count at their own task, size and
    classes unless the options say otherwise. One result per distinct setting, in order of
    first appearance; together they hold every spec once."""
    groups: dict[tuple, list[tuple[str, ArchSpec]]] = {}
    for name, spec, recorded in named:
        groups.setdefault(settings_for(recorded, task, size, num_classes), []).append(
            (name, spec))
    return [profile(specs, t, sz, n, exact, progress) for (t, sz, n), specs in groups.items()]


def add_latency(results: list[ProfileResult], named: list[tuple[str, ArchSpec, Any]],
                table: Any, source: str) -> None:
    """Predicted latency (``extra["latency_ms"]``) beside MAdds for the profiles counted at
    the latency table's setting (task, size, classes); a table of none of the settings is
    refused (``source``: where the table came from, for the message)."""
    from fnacli.cost.latency import check_usage, predict_ms

    specs = {name: spec for name, spec, _ in named}
    matching = [r for r in results
                if (r.task, tuple(r.size), r.num_classes) ==
                (table.task, tuple(table.size), table.num_classes)]
    if not matching:
        r = results[0]
        check_usage(table, r.task, r.size, r.num_classes, source)
    for r in matching:
        r.latency_source, r.latency_table = source, table
        for p in r.profiles:
            p.extra["latency_ms"] = predict_ms(table, specs[p.name])


def in_given_order(results: list[ProfileResult],
                   named: list[tuple[str, ArchSpec, Any]]) -> list[Profile]:
    """The profiles of ``profile_recorded``'s results in the order the specs were given (a
    name given twice ranks at its first place; the sort is stable)."""
    rank = {name: i for i, (name, _, _) in reversed(list(enumerate(named)))}
    return sorted((p for r in results for p in r.profiles),
                  key=lambda p: rank.get(p.name, len(rank)))
