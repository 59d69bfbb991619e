"""The latency lookup table: every candidate layer of a space timed on this machine.

A ``LatencyTable`` is a ``fnacli.cost.lut.Lut`` whose entries hold measured latencies (integer
nanoseconds) instead of MAdds, under the same keys: a backbone layer is (op, in, out, stride,
input h, w), a fixed part (stem, head conv, fc, the detector's neck and head) a (group,
channels, signature) entry. The MAdds table's enumeration of a space (``Lut.build``), its
sums (``profile``/``arch_madds``) and its expectation over α/β within a cost scope
(``fnacli.cost.expected``) therefore apply unchanged: they add up nanoseconds. On top of
the sum the table keeps a measured constant ``overhead_ns`` (what a whole network costs
beyond its parts: the Python of the outer forward, feature dicts, the first layer's cold
caches), part of the ``detector`` scope only.

Neck and head. Their latency depends on the widths of every map they receive, jointly in
principle, but the work on each map is separate (SSDLite's predictors on the tap, its
extras and predictors on the last map; RetinaNet's FPN laterals), so the table measures the
whole neck + head once at the reference widths (those of ``space.max_arch()``) and once per
other width of each map with the others at the reference, and stores differences:
T(w₁, w₂, …) ≈ T(ref) + Σᵢ [T(wᵢ, others ref) − T(ref)]. The entries are the MAdds
table's (one per piece of the task's network) so that its sums apply.

How one module is timed is ``fnacli.cost.measure``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from fnacli import __version__
from fnacli.cost.cache import cache_dir
from fnacli.cost.count import build_model
from fnacli.cost.lut import Lut, saved_header
from fnacli.cost.measure import (
    CONFIDENCE,
    Bench,
    MeasureConfig,
    Timing,
    environment,
    runtime_of,
    same_machine,
)
from fnacli.cost.parts import FixedKey, map_channels, neck_head, timed_network
from fnacli.cost.space import random_arch, space_hash
from fnacli.cost.table import LayerKey
from fnacli.cost.target import Target, default_classes, target_name
from fnacli.cost.units import mbconv_params, progress_bar
from fnacli.errors import UserError
from fnacli.spec import ArchSpec, Op, SpaceSpec

LATENCY_SCHEMA = "fnacli/latency@1"
NS = 1e9  # table values are integer nanoseconds
BUSY_SHARE = 0.25  # overhead / table sum above which a build warns of a busy machine
_CHUNK = 256  # jobs measured (interleaved) between two saves of a partial table
# Whole networks whose median gap to the table's sum is the constant overhead. With 3 the
# median swung by a whole network's noise: fna/SSDLite 320 in onnxruntime (idle 2-core CPU)
# checked at 5.2% (fp32) and 9.0% (int8) median error with 3, 2.7% and 1.3% with 7.
OVERHEAD_NETWORKS = 7


# -- what a table measures ---------------------------------------------------------------------
class _Pooled(nn.Module):
    """The classifier's pooling + fc (dropout is the identity in eval)."""

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class LatencyTable(Lut):
    """Measured latencies (ns) of every entry a space can produce, on one machine."""

    def __init__(self, space: SpaceSpec, task: Target, size: tuple[int, int],
                 num_classes: int | None = None, cfg: MeasureConfig | None = None) -> None:
        super().__init__(space, task, size, num_classes)
        self.cfg = cfg or MeasureConfig()
        self.env = environment(self.cfg)
        self.memory_format = "channels_last" if self.cfg.channels_last else "contiguous"
        self.overhead_ns = 0
        self.stats: dict = {}  # confidence of the entries, build time, ...
        self.check_result: dict | None = None
        self._measuring = False
        self._timings: list[Timing] = []
        self._net_times: list[Timing] = []  # the overhead's whole networks, this build
        self.on_progress: Callable[[LatencyTable], None] | None = None  # partial saves

    # measuring -------------------------------------------------------------------------------
    @property
    def _fmt(self) -> torch.memory_format:
        return torch.channels_last if self.memory_format == "channels_last" else \
            torch.contiguous_format

    def build(self, progress: bool = False) -> LatencyTable:
        """Measure every entry that is still missing (a resumed table keeps its entries) and,
        in the same interleaved rounds, a few whole networks for the constant overhead."""
        t0 = time.perf_counter()
        self.cfg.check()
        if self.cfg.runtime != "torch":  # an exported graph has its own layout
            self.memory_format = "contiguous"
        elif self.cfg.channels_last is None and not self.layers:
            self.memory_format = self._faster_format()
        self._measuring = True
        self._net_times = []
        try:
            super().build(progress)
        finally:
            self._measuring = False
        archs = self.calibration_archs()
        if not self._net_times:  # nothing was missing (a finished resume): time them alone
            self._net_times = self.measure_networks(archs)
        gaps = sorted(t.median_s * NS - self.arch_madds(a)
                      for a, t in zip(archs, self._net_times, strict=True))
        self.stats["overhead_gaps_ns"] = [int(g) for g in gaps]
        self.stats["calibration_ms"] = [round(t.median_s * 1e3, 4) for t in self._net_times]
        self.overhead_ns = int(round(gaps[len(gaps) // 2]))
        sums = sorted(self.arch_madds(a) for a in archs)
        self.stats["overhead_share"] = round(self.overhead_ns / max(sums[len(sums) // 2], 1), 4)
        took = time.perf_counter() - t0 + self.stats.get("build_s", 0.0)
        widths = sorted(t.rel_halfwidth for t in self._timings)
        self.stats = {**{k: v for k, v in self.stats.items()
                         if k in ("format_ms", "overhead_gaps_ns", "calibration_ms",
                                  "overhead_share")},
                      "build_s": round(took, 1), "confidence": CONFIDENCE,
                      "entries_timed": len(self._timings) or self.stats.get("entries_timed", 0),
                      "median_ci_rel": round(widths[len(widths) // 2], 4) if widths
                      else self.stats.get("median_ci_rel"),
                      "max_ci_rel": round(widths[-1], 4) if widths
                      else self.stats.get("max_ci_rel"),
                      "rounds": [self.cfg.min_rounds, self.cfg.max_rounds],
                      "rel_tol": self.cfg.rel_tol}
        return self

    def fill(self, layer_keys: Iterable[LayerKey], fixed: Iterable[tuple[str, int, tuple]],
             spec: ArchSpec, progress: bool = False) -> None:
        """Measure the missing entries: chunks of ``_CHUNK`` jobs, each chunk timed in
        interleaved rounds (the neck/head measurements, which are differenced, share the first
        chunk; the overhead's whole networks join the last), the table saved after each."""
        layer_keys = [k for k in dict.fromkeys(layer_keys) if k not in self.layers]
        fixed = [f for f in dict.fromkeys(fixed) if f not in self.fixed]
        if not layer_keys and not fixed:
            return
        if not self._measuring:
            what = (f"layer {layer_keys[0][0]} {layer_keys[0][1]}->{layer_keys[0][2]} at "
                    f"{layer_keys[0][4]}x{layer_keys[0][5]}" if layer_keys else
                    f"{fixed[0][0]} at {fixed[0][1]} channels")
            raise UserError(f"the latency table has no entry for {what}: it covers the space "
                            f"{self.space.name or '(unnamed)'} under {self.task} at "
                            f"{self.size[0]}x{self.size[1]}; measure a table for this "
                            "architecture's space and size (fnacli latency)")
        bench = self.bench(self._fmt)
        simple = [f for f in fixed if f[0] in ("stem", "head_conv", "fc")]
        plans = self._neck_head_plans([f for f in fixed if f not in simple], spec)
        heads = [("nh", sig, v) for sig, plan in plans.items() for v in plan["variants"]]
        rest = [("layer", k) for k in layer_keys] + [("fixed", f) for f in simple]
        first = max(_CHUNK, len(heads))
        chunks = [heads + rest[:first - len(heads)]]
        chunks += [rest[i:i + _CHUNK] for i in range(first - len(heads), len(rest), _CHUNK)]
        archs = self.calibration_archs()
        chunks[-1] = chunks[-1] + [("net", i) for i in range(len(archs))]
        with progress_bar(progress, "latency table") as bar:
            if bar:
                bar.add(sum(map(len, chunks)))
            for chunk in chunks:
                jobs = [bench.job(item, *self._module_of(item, spec, plans, archs))
                        for item in chunk]
                timed = bench.run(jobs, (lambda n: bar.advance(n)) if bar else None)
                del jobs
                self._record(timed, plans, archs)
                if self.on_progress:
                    self.on_progress(self)

    def _record(self, timed: Mapping[object, Timing], plans: dict, archs: list) -> None:
        nets: dict[int, Timing] = {}
        heads: dict[tuple, Timing] = {}
        for item, t in timed.items():
            kind, key = item[0], item[1:]
            ns = int(round(t.median_s * NS))
            if kind == "net":
                nets[key[0]] = t
                continue
            self._timings.append(t)
            if kind == "layer":
                (k,) = key
                op = Op.parse(k[0])
                self.layers[k] = (ns, mbconv_params(op, k[1], k[2]))
            elif kind == "fixed":
                (k,) = key
                self.fixed[k] = ("head" if k[0] == "fc" else "backbone", ns,
                                 self._simple_params(k))
            else:
                heads[key] = t
        if nets:
            self._net_times = [nets[i] for i in range(len(archs))]
        for sig, plan in plans.items():
            if (sig, "ref") not in heads:
                continue
            base = int(round(heads[(sig, "ref")].median_s * NS))

            def delta(n: str, c: int, sig: tuple = sig, ref: dict = plan["ref"],
                      base: int = base) -> int:
                if ref[n] == c:
                    return 0
                return int(round(heads[(sig, (n, c))].median_s * NS)) - base

            for f in plan["needs"]:
                self.fixed[f] = self._neck_head_entry(f, plan["names"], delta, base)

    def _neck_head_plans(self, needs: list[FixedKey], spec: ArchSpec) -> dict[tuple, dict]:
        """Per signature (map sizes): the map each width-following piece reads, the
        reference widths of the maps the neck/head reads and the single-map variants to
        time."""
        if not needs:
            return {}
        task = self.task_obj
        maps = task.head_inputs(spec)
        names = {p.name: maps[p.reads] for p in task.head_pieces if p.reads is not None}
        widths = map_channels(task, spec)
        ref = {m: widths[m] for m in maps}
        plans: dict[tuple, dict] = {}
        for f in needs:
            plans.setdefault(f[2], {"needs": []})["needs"].append(f)
        for sig, plan in plans.items():
            sizes = {m: tuple(sig[2 * i:2 * i + 2]) for i, m in enumerate(maps)}
            variants = sorted({(names[g], c) for g, c, _ in plan["needs"]
                               if g in names and ref[names[g]] != c})
            plan.update(names=names, sizes=sizes, ref=ref, variants=["ref", *variants])
        return plans

    def _module_of(self, item: tuple, spec: ArchSpec, plans: dict, archs: list
                   ) -> tuple[nn.Module, list]:
        from fnacli.nn.blocks import ConvBN, MBConv

        kind, key = item[0], item[-1]
        b = self.cfg.batch
        if kind == "net":
            return self.network(archs[key]), [self.image()]
        if kind == "nh":
            plan = plans[item[1]]
            chans = plan["ref"] if key == "ref" else {**plan["ref"], key[0]: key[1]}
            return neck_head(self.task_obj, spec, self.num_classes, self.size, chans,
                             plan["sizes"], b)
        if kind == "layer":
            op_s, cin, cout, stride, h, w = key
            op = Op.parse(op_s)
            return MBConv(cin, cout, op.kernel, op.expand, stride), [torch.randn(b, cin, h, w)]
        group, c, sig = key
        if group == "stem":
            return ConvBN(3, c, 3, sig[0]), [torch.randn(b, 3, self.size[1], self.size[0])]
        if group == "head_conv":
            return ConvBN(c, sig[0]), [torch.randn(b, c, sig[1], sig[2])]
        res = self.geometry(spec).stage_out[-1]
        return _Pooled(c, sig[0]), [torch.randn(b, c, *res)]

    @staticmethod
    def _simple_params(key: FixedKey) -> int:
        group, c, sig = key
        if group == "fc":
            return c * sig[0] + sig[0]
        if group == "stem":
            return 3 * c * 9 + 2 * c
        return c * sig[0] + 2 * sig[0]

    def _neck_head_entry(self, f: FixedKey, names: Mapping[str, str],
                         delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        """Entries that add up to T(ref) + Σ deltas over an architecture's needs (one of each
        piece): T(ref) goes to the first neck piece (the first piece when there is no neck),
        the change of a map's width to the first piece that reads the map, nothing to the
        others; each entry is labelled with its piece's part."""
        group, c, _ = f
        pieces = self.task_obj.head_pieces
        piece = next(p for p in pieces if p.name == group)
        holder = next((p for p in pieces if p.part == "neck"), pieces[0])
        ns = base if piece is holder else 0
        if piece.reads is not None and piece is next(p for p in pieces if p.reads == piece.reads):
            ns += delta(names[group], c)
        return piece.part, ns, 0

    # whole networks --------------------------------------------------------------------------
    def network(self, spec: ArchSpec) -> nn.Module:
        """The module a prediction is for: backbone / classifier / detector without its
        transform and post-processing (image batch in, raw head outputs out) / segmenter
        (image batch in, logits at the input size out)."""
        return timed_network(build_model(spec, self.task_obj or self.task, self.size,
                                         self.num_classes))

    def bench(self, fmt: torch.memory_format) -> Bench:
        """What times this table's modules: eager PyTorch, or their exported graphs in
        onnxruntime (``fnacli.cost.ort``) with the same statistics."""
        if self.cfg.runtime == "onnxruntime":
            from fnacli.cost.ort import ort_bench

            return ort_bench(self.cfg, self.cfg.ort())
        return Bench(self.cfg, fmt)

    def image(self) -> torch.Tensor:
        return torch.randn(self.cfg.batch, 3, self.size[1], self.size[0])

    def measure_networks(self, specs: Sequence[ArchSpec], fmt: torch.memory_format | None = None
                         ) -> list[Timing]:
        """End-to-end latency of each spec's network, timed interleaved."""
        bench = self.bench(fmt if fmt is not None else self._fmt)
        jobs = [bench.job(i, self.network(s), [self.image()]) for i, s in enumerate(specs)]
        timed = bench.run(jobs)
        return [timed[i] for i in range(len(specs))]

    def _faster_format(self) -> str:
        ref = self.space.max_arch()
        net = self.network(ref)
        times = {}
        for name, fmt in (("contiguous", torch.contiguous_format),
                          ("channels_last", torch.channels_last)):
            bench = Bench(self.cfg, fmt)
            times[name] = bench.run([bench.job(name, net, [self.image()])])[name].median_s
        self.stats["format_ms"] = {k: round(v * 1e3, 3) for k, v in times.items()}
        return min(times, key=times.get)

    def calibration_archs(self, n: int = OVERHEAD_NETWORKS) -> list[ArchSpec]:
        """The reference architecture (widest, deepest, first candidates) and seeded random
        ones (seeds apart from ``--check``'s)."""
        rng = random.Random(10_000 + self.cfg.seed)
        return [self.space.max_arch(), *(random_arch(self.space, rng) for _ in range(n - 1))]

    # predictions -----------------------------------------------------------------------------
    def latency_ns(self, spec: ArchSpec) -> float:
        """Predicted latency of an architecture: the table's sum plus the overhead."""
        return float(self.arch_madds(spec)) + self.overhead_ns

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.latency_ns(spec) / 1e6

    def constant_cost(self) -> float:
        """The measured overhead: part of the whole network's latency (``detector`` scope)."""
        return float(self.overhead_ns)

    def expected_latency(self, alpha_probs: Mapping, beta_probs: Mapping,
                         scope: str = "detector") -> torch.Tensor:
        """E[latency] (ns) under α/β within ``scope`` (:meth:`expected_cost`): the whole
        network with the overhead by default, the searched blocks alone for ``blocks``."""
        return self.expected_cost(alpha_probs, beta_probs, scope)

    # persistence -----------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"schema": LATENCY_SCHEMA, "fnacli_version": __version__, "task": self.task,
             "input": list(self.size), "num_classes": self.num_classes,
             "space_hash": space_hash(self.space), "space": self.space.to_dict(),
             "unit": "ns", "environment": self.env, "measure": asdict(self.cfg),
             "memory_format": self.memory_format, "overhead_ns": self.overhead_ns,
             "stats": self.stats, "check": self.check_result, **self.entries_json()}
        return json.dumps(d, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "latency table",
                  task_of: Callable[[str], Target] = str) -> LatencyTable:
        """A table from its JSON; ``task_of`` resolves the task name it records (the
        caller's registry, e.g. ``fnacli.tasks.lookup``)."""
        from fnacli.io import load_json_text

        d = load_json_text(text, source)
        if not isinstance(d, dict) or d.get("schema") != LATENCY_SCHEMA:
            raise UserError(f"{source}: not an fnacli latency table (schema "
                            f"{LATENCY_SCHEMA!r}); measure one with 'fnacli latency'")
        try:
            table = cls(*saved_header(d, source, task_of), MeasureConfig(**d["measure"]))
            table.env = dict(d["environment"])
            table.memory_format = str(d["memory_format"])
            table.overhead_ns = int(d["overhead_ns"])
            table.stats = dict(d.get("stats") or {})
            table.check_result = d.get("check")
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: missing or malformed fields of a latency table") \
                from None
        table.load_saved(d, source)
        return table

    def identity(self) -> dict:
        """What a resumed search must share with the table it started with."""
        import hashlib

        entries = json.dumps(self.entries_json(), sort_keys=True).encode()
        return {"entries": hashlib.sha256(entries).hexdigest()[:16],
                "overhead_ns": self.overhead_ns, "device_name": self.env.get("device_name"),
                "runtime": runtime_of(self.env)}

    def busy_warning(self) -> str | None:
        """A note when whole networks ran much slower than the sum of their parts: short
        timings dodge other processes' load, whole networks cannot (see docs/latency.md)."""
        share = self.stats.get("overhead_share")
        if share is None or share <= BUSY_SHARE:
            return None
        return (f"whole networks ran {1 + share:.2f}x as long as the sum of their parts "
                "(the overhead); on an idle machine it is a few percent, so other processes "
                "were probably competing for the CPU: predictions include that load; measure "
                "on a quiet machine for the device's own latency")

    def describe(self) -> str:
        e = self.env
        if e.get("runtime", "torch") != "torch":
            return (f"{e['device_name']} ({e['device']}), {runtime_of(e)}, {e['threads']} "
                    f"thread(s), batch {e['batch']}")
        return (f"{e['device_name']} ({e['device']}), torch {e['torch']}, {e['threads']} "
                f"thread(s), batch {e['batch']}, {self.memory_format}")


def read_latency_table(path: str | Path, task_of: Callable[[str], Target],
                       force: bool = False) -> LatencyTable:
    """A latency table from a file (``task_of`` resolves the task it was measured for),
    refused (UserError) when it was measured on another device or torch version unless
    ``force``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such latency table (measure one with 'fnacli latency')")
    table = LatencyTable.from_json(p.read_text(), str(path), task_of)
    from dataclasses import replace

    # this machine, in the table's runtime (an onnxruntime table: the installed version)
    here = environment(replace(table.cfg, device=table.env.get("device", "cpu")
                               if torch.cuda.is_available() else "cpu"))
    diff = same_machine(table.env, here)
    if diff and not force:
        raise UserError(f"{path}: measured elsewhere ({'; '.join(diff)}); measure a table "
                        "here with 'fnacli latency', or pass --force to use it anyway")
    return table


def predict_ms(table: LatencyTable, spec: ArchSpec) -> float | None:
    """Predicted latency, or None when the table has no entry for some part of ``spec``."""
    try:
        return table.latency_ms(spec)
    except UserError:
        return None


def check_usage(table: LatencyTable, task: Target, size: tuple[int, int], num_classes: int,
                source: str) -> None:
    """Refuse a table of another task / input size / class count than what is reported."""
    task = target_name(task)
    if (table.task, tuple(table.size), table.num_classes) != (task, tuple(size), num_classes):
        raise UserError(f"{source}: measured for {table.task} at {table.size[0]}x"
                        f"{table.size[1]} with {table.num_classes} classes, not {task} at "
                        f"{size[0]}x{size[1]} with {num_classes} (give the table's task, input "
                        "size and class count)")


def check_table_for(table: LatencyTable, space: SpaceSpec, task: Target, size: tuple[int, int],
                    num_classes: int, source: str) -> None:
    """Refuse a table of another space / task / size / class count for a search."""
    if space_hash(table.space) != space_hash(space):
        raise UserError(f"{source}: measured for another search space than the supernet's")
    check_usage(table, task, size, num_classes, source)


def search_latency_table(path: str | Path, space: SpaceSpec, task: Target,
                         size: tuple[int, int], num_classes: int, task_of: Callable[[str], Target],
                         force: bool = False) -> LatencyTable:
    """The table a search uses: this machine's (or ``force``), of the search's space, task,
    input size and class count."""
    table = read_latency_table(path, task_of, force)
    check_table_for(table, space, task, size, num_classes, str(path))
    table.space = space
    return table


# -- building, resuming, caching ---------------------------------------------------------------
def latency_cache_path(space: SpaceSpec, task: Target, size: tuple[int, int], num_classes: int,
                       cfg: MeasureConfig) -> Path:
    import hashlib

    where = hashlib.sha256(json.dumps(environment(cfg), sort_keys=True).encode()).hexdigest()
    name = (f"lat-{target_name(task)}-{size[0]}x{size[1]}-c{num_classes}-b{cfg.batch}"
            f"-{cfg.device}-t{cfg.threads}-{runtime_tag(cfg)}-{space_hash(space)[:12]}"
            f"-{where[:8]}.json")
    return cache_dir() / "latency" / name


def runtime_tag(cfg: MeasureConfig) -> str:
    """``torch``, ``ort-fp32`` or ``ort-int8`` (in a cached table's name)."""
    return "torch" if cfg.runtime == "torch" else f"ort-{cfg.precision}"


def partial_path(output: str | Path) -> Path:
    return Path(f"{output}.partial")


def build_latency_table(space: SpaceSpec, task: Target, size: tuple[int, int],
                        num_classes: int | None, cfg: MeasureConfig, *,
                        partial: Path | None = None, resume: bool = False,
                        progress: bool = False) -> LatencyTable:
    """Measure a table; with ``partial`` its entries are saved there as they come and, with
    ``resume``, an earlier partial table's entries are kept (same space, task, machine)."""
    from fnacli.io import write_text_atomic

    num_classes = default_classes(task) if num_classes is None else num_classes
    table = LatencyTable(space, task, size, num_classes, cfg)
    if resume and partial is not None and partial.is_file():
        old = LatencyTable.from_json(partial.read_text(), str(partial), lambda name: task)
        diff = same_machine(old.env, table.env)
        if diff or space_hash(old.space) != space_hash(space) or old.cfg != cfg or \
                (old.task, old.size, old.num_classes) != (table.task, tuple(size), num_classes):
            raise UserError(f"{partial}: a partial table of another space, task, size or "
                            f"machine ({'; '.join(diff) or 'settings differ'}); start over "
                            "with --force")
        table.layers, table.fixed = old.layers, old.fixed
        table.memory_format, table.stats = old.memory_format, old.stats
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        table.on_progress = lambda t: write_text_atomic(partial, t.to_json())
    return table.build(progress)



def parse_latency(text: str | float, flag: str) -> float:
    """``12ms``, ``800us``, ``0.5s`` or a bare number of milliseconds -> milliseconds."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(ms|us|µs|s)?\s*", str(text))
    if not m:
        raise UserError(f"{flag}: expected a latency like 12ms, 800us or 0.5s, got {text!r}")
    v = float(m.group(1)) * {"ms": 1.0, None: 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}[m.group(2)]
    if v <= 0:
        raise UserError(f"{flag}: expected a positive latency, got {text!r}")
    return v


