"""The cost table: MAdds and params of the pieces architectures are made of, filled on demand.

A network's MAdds are a sum over its layers, and a layer's MAdds depend only on
(op, in channels, out channels, stride, input resolution); the detector's neck and head
depend only on the channels of the maps they receive. ``CostTable`` caches exactly those
entries (per-position counts of fvcore's handles, ``fnacli.cost.units``) and adds them up,
so profiling an architecture needs no trace of the whole network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fnacli.cost import units
from fnacli.cost.count import PARTS, Profile, default_classes
from fnacli.cost.geometry import Geometry, out_res, positions
from fnacli.cost.parts import FixedKey, detector_fixed
from fnacli.cost.space import check_scope
from fnacli.cost.units import Bar, mbconv_params, mbconv_units, parse_op, progress_bar
from fnacli.errors import UserError
from fnacli.spec import ArchSpec, SpaceSpec
from fnacli.tasks import Task, get_task, is_task, task_names

LUT_TASKS = ("none", "classifier", *task_names())
LayerKey = tuple[str, int, int, int, int, int]  # op, cin, cout, stride, input h, input w


class CostTable:
    """MAdds/params entries for one (task, input size, num_classes), filled on demand."""

    def __init__(self, task: str, size: tuple[int, int], num_classes: int | None = None) -> None:
        if task not in LUT_TASKS:
            raise UserError(f"unknown task {task!r} (expected one of {', '.join(LUT_TASKS)})")
        self.task = task
        # the downstream task's object; None for the backbone alone and the classifier
        self.task_obj: Task | None = get_task(task) if is_task(task) else None
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = default_classes(task) if num_classes is None else num_classes
        self.layers: dict[LayerKey, tuple[int, int]] = {}
        self.fixed: dict[FixedKey, tuple[str, int, int]] = {}

    # entries one architecture needs ------------------------------------------------------
    def stage_strides(self, spec: ArchSpec | SpaceSpec) -> list[int]:
        """The stride each stage really has under the task (an atrous backbone runs its last
        stages at stride 1; dilation changes no cost)."""
        from fnacli.nn.backbone import atrous_stages

        out_stride = self.task_obj.output_stride if self.task_obj is not None else None
        return [row[0] for row in atrous_stages(spec.stem_stride,
                                                [s.stride for s in spec.stages], out_stride)]

    def geometry(self, spec: ArchSpec) -> Geometry:
        return Geometry.of(spec.stem_stride, self.stage_strides(spec), self.size)

    def layer_keys(self, spec: ArchSpec) -> list[LayerKey]:
        geo = self.geometry(spec)
        strides = self.stage_strides(spec)
        keys = []
        for s, layer, cin, cout, op, _ in spec.layers():
            res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]
            keys.append((str(op), cin, cout, strides[s] if layer == 0 else 1, *res))
        return keys

    def fixed_needs(self, spec: ArchSpec) -> list[tuple[str, int, tuple[int, ...]]]:
        """(group, channels, sig) of every non-layer piece of ``spec`` under this task."""
        geo = self.geometry(spec)
        last = spec.stages[-1].out
        needs = [("stem", spec.stem_out, (spec.stem_stride, *geo.stem))]
        task = self.task_obj
        has_head = bool(spec.head_out) and (task is None or task.uses_head_conv)
        if has_head:
            needs.append(("head_conv", last, (spec.head_out, *geo.stage_out[-1])))
        map_c = spec.head_out if has_head else last
        if task is not None:
            needs += task.cost_needs(self, spec, map_c)
        elif self.task == "classifier":
            needs.append(("fc", map_c, (self.num_classes,)))
        return needs

    # filling -----------------------------------------------------------------------------
    def fill(self, layer_keys: Iterable[LayerKey], fixed: Iterable[tuple[str, int, tuple]],
             spec: ArchSpec, progress: bool = False) -> None:
        """Compute every missing entry. ``spec`` gives the stride pattern of the fixed parts
        (any member of the family: only its strides matter)."""
        layer_keys = [k for k in dict.fromkeys(layer_keys) if k not in self.layers]
        fixed = [f for f in dict.fromkeys(fixed) if f not in self.fixed]
        with progress_bar(progress and bool(layer_keys or fixed), "cost table") as bar:
            need = []
            for op, cin, cout, *_ in layer_keys:
                need += mbconv_units(parse_op(op), cin, cout)
            need += [u for f in fixed for u in self._simple_units(f)]
            units.fill_units(need, bar)
            for key in layer_keys:
                self.layers[key] = self._layer_entry(key)
            simple = [f for f in fixed if f[0] in ("stem", "head_conv", "fc")]
            for f in simple:
                self.fixed[f] = self._simple_entry(f)
            self._fill_detector([f for f in fixed if f not in self.fixed], spec, bar)

    @staticmethod
    def _layer_entry(key: LayerKey) -> tuple[int, int]:
        op_s, cin, cout, stride, h, w = key
        op = parse_op(op_s)
        convs = mbconv_units(op, cin, cout)
        pos_in, pos_out = h * w, positions(out_res((h, w), stride))
        madds = sum(units.PP[u] * pos_out for u in convs)
        if op.expand != 1:  # the 1x1 expansion runs at the input resolution
            madds += units.PP[convs[0]] * (pos_in - pos_out)
        return madds, mbconv_params(op, cin, cout)

    @staticmethod
    def _simple_units(f: tuple[str, int, tuple]) -> list[tuple[int, int, int, int]]:
        group, c, sig = f
        if group == "stem":
            return [(3, c, 3, 1)]
        if group == "head_conv":
            return [(c, sig[0], 1, 1)]
        if group == "fc":
            return [(c, sig[0], 0, 1)]
        return []

    def _simple_entry(self, f: tuple[str, int, tuple]) -> tuple[str, int, int]:
        group, c, sig = f
        (unit,) = self._simple_units(f)
        if group == "fc":
            return "head", units.PP[unit], c * sig[0] + sig[0]
        pos = sig[-2] * sig[-1]
        return "backbone", units.PP[unit] * pos, unit[0] * unit[1] * unit[2] ** 2 + 2 * unit[1]

    def _fill_detector(self, needs: list[tuple[str, int, tuple]], spec: ArchSpec,
                       bar: Bar | None) -> None:
        if not needs or self.task_obj is None:
            return
        names, per_var, sizes_of = self.task_obj.cost_stub_maps(self, spec, needs)
        for sig in sorted({s for *_, s in needs}):
            values = [sorted(per_var[i]) or [1] for i in range(len(names))]
            n = max(len(v) for v in values)
            # zip the channel values of the maps: one stub detector per row, padded
            combos = [tuple(v[min(j, len(v) - 1)] for v in values) for j in range(n)]
            sizes = sizes_of(sig)
            if bar:
                bar.add(n)
            self.fixed.update(detector_fixed(self.task_obj, spec, self.num_classes, names, combos,
                                              sizes, sig))
            if bar:
                bar.advance(n)

    # profiles ----------------------------------------------------------------------------
    def profile_many(self, specs: list[ArchSpec], names: list[str] | None = None,
                     progress: bool = False) -> list[Profile]:
        """Profiles of many specs from the table (missing entries computed in one batch)."""
        keys = [self.layer_keys(s) for s in specs]
        needs = [self.fixed_needs(s) for s in specs]
        by_pattern: dict[tuple, tuple[ArchSpec, list, list]] = {}
        for spec, k, f in zip(specs, keys, needs, strict=True):
            pattern = (spec.stem_stride, tuple(st.stride for st in spec.stages))
            _, ks, fs = by_pattern.setdefault(pattern, (spec, [], []))
            ks += k
            fs += f
        for spec, ks, fs in by_pattern.values():
            self.fill(ks, fs, spec, progress)
        names = names or [f"spec{i}" for i in range(len(specs))]
        return [self._sum(n, k, f) for n, k, f in zip(names, keys, needs, strict=True)]

    def profile(self, spec: ArchSpec, name: str = "spec") -> Profile:
        return self.profile_many([spec], [name])[0]

    def _sum(self, name: str, keys: list[LayerKey], needs: list) -> Profile:
        madds = dict.fromkeys(PARTS, 0)
        params = dict.fromkeys(PARTS, 0)
        for k in keys:
            m, p = self.layers[k]
            madds["backbone"] += m
            params["backbone"] += p
        for f in needs:
            part, m, p = self.fixed[f]
            madds[part] += m
            params[part] += p
        return Profile(name, self.task, self.size, self.num_classes, params, madds, "lut")

    def arch_madds(self, spec: ArchSpec) -> float:
        """Total MAdds of an architecture, summed from the table."""
        return float(self.profile(spec).madds)

    def arch_cost(self, spec: ArchSpec, scope: str = "detector",
                  stages: Iterable[int] | None = None) -> float:
        """MAdds of ``spec`` within ``scope`` (``COST_SCOPES``); ``blocks`` counts the layers
        of the stages in ``stages`` (for a space: the searched ones, ``searched_stages``)."""
        check_scope(scope)
        if scope == "detector":
            return self.arch_madds(spec)
        if scope == "backbone":
            return float(self.profile(spec).madds_parts["backbone"])
        if stages is None:
            raise ValueError("the blocks scope needs the searched stages")
        keep = set(stages)
        keys = [k for (s, *_), k in zip(spec.layers(), self.layer_keys(spec), strict=True)
                if s in keep]
        self.fill(keys, [], spec)
        return float(sum(self.layers[k][0] for k in keys))

    # persistence -------------------------------------------------------------------------
    def entries_json(self) -> dict:
        return {"layers": [[*k, m, p] for k, (m, p) in sorted(self.layers.items())],
                "fixed": [[g, c, list(sig), part, m, p]
                          for (g, c, sig), (part, m, p) in sorted(self.fixed.items())]}

    def load_entries(self, d: Mapping, source: str) -> None:
        try:
            for op, cin, cout, stride, h, w, m, p in d["layers"]:
                self.layers[(str(op), int(cin), int(cout), int(stride), int(h), int(w))] = \
                    (int(m), int(p))
            for g, c, sig, part, m, p in d["fixed"]:
                self.fixed[(str(g), int(c), tuple(int(v) for v in sig))] = (str(part), int(m),
                                                                            int(p))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: malformed lookup table entries") from None


def profile_specs(specs: list[ArchSpec], task: str, size: tuple[int, int],
                  num_classes: int | None = None, names: list[str] | None = None,
                  progress: bool = False) -> list[Profile]:
    """The fast path: params and MAdds of many specs from one cost table."""
    return CostTable(task, size, num_classes).profile_many(specs, names, progress)
