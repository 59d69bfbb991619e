"""The lookup table (LUT) of a search space: MAdds of every entry its architectures can be
made of, the differentiable expected cost C(α, β), persistence and the on-disk cache.

``Lut`` is a ``CostTable`` filled for every entry a search space can produce, plus the
differentiable expected cost C(α, β) of Jung et al. (eqs. 5-8), extended so a layer's cost
uses the distribution of its input width (the previous stage's β), not just its maximum.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from fnacli import __version__
from fnacli.cost.cache import cache_dir, save_text
from fnacli.cost.expected import CostTensors, expected_cost
from fnacli.cost.geometry import Res
from fnacli.cost.parts import FixedKey, map_channels, signature
from fnacli.cost.space import (
    Choice,
    layer_ops,
    searched_stages,
    space_hash,
    stage_in_outs,
    width_choices,
    with_out,
)
from fnacli.cost.table import CostTable, LayerKey
from fnacli.cost.target import Piece, Target, default_classes, target_name
from fnacli.errors import UserError
from fnacli.spec import SKIP, ArchSpec, SpaceSpec

LUT_SCHEMA = "fnacli/lut@1"


class Lut(CostTable):
    """Every entry a space can produce, and its differentiable expected cost.

    Architecture parameters (as the search holds them): α probabilities per searchable
    (stage, layer), over ``space.stages[s].layer_candidates(layer)`` in order, and β
    probabilities per stage with more than one channel candidate, over ``outs`` (ascending).
    """

    def __init__(self, space: SpaceSpec, task: Target, size: tuple[int, int],
                 num_classes: int | None = None) -> None:
        super().__init__(task, size, num_classes)
        self.space = space
        self.built_by = __version__  # the fnacli version that counted the entries
        self._tensors: dict[torch.device, CostTensors] = {}
        self.cached_at: Path | None = None  # the cache file it was read from or saved to

    def build(self, progress: bool = False) -> Lut:
        ref = self.space.max_arch()  # any member: only its stride pattern is used
        geo = self.geometry(ref)
        strides = self.stage_strides(ref)
        keys: list[LayerKey] = []
        for s, st in enumerate(self.space.stages):
            for layer in range(st.layers):
                stride = strides[s] if layer == 0 else 1
                res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]
                for op in layer_ops(self.space, s, layer):
                    if op == SKIP:
                        continue
                    pairs = ([(a, b) for a in stage_in_outs(self.space, s) for b in st.outs]
                             if layer == 0 else [(c, c) for c in st.outs])
                    keys += [(op, a, b, stride, *res) for a, b in pairs]
        self.fill(keys, self._space_fixed(ref), ref, progress)
        return self

    def _space_fixed(self, ref: ArchSpec) -> list[FixedKey]:
        """Fixed-part entries for every channel count the space can feed them: the head conv
        and fc at each last-stage width, each piece of the task at each width of its map."""
        needs = []
        n = len(self.space.stages) - 1
        for c in self.space.stages[-1].outs:
            needs += self.fixed_needs(with_out(ref, n, c))
        for piece, _, widths in self._piece_widths(ref):
            needs += [(piece.name, w, self._sig(ref)) for w in set(_flat(widths))]
        return needs

    def _sig(self, ref: ArchSpec) -> tuple[int, ...]:
        return signature(self.task_obj, ref, self.geometry(ref))

    def _piece_widths(self, ref: ArchSpec) -> list[tuple[Piece, tuple[Choice, ...], list | int]]:
        """Per piece of the task's network: the choices the width of the map it reads
        depends on, and that width at every combination of them (0: it reads none)."""
        task = self.task_obj
        if task is None:
            return []
        maps = task.head_inputs(ref)
        out = []
        for p in task.head_pieces:
            if p.reads is None:
                out.append((p, (), 0))
                continue
            m = maps[p.reads]
            out.append((p, *width_choices(self.space, ref, lambda a, m=m: map_channels(task,
                                                                                        a)[m])))
        return out

    # expected cost -----------------------------------------------------------------------
    def _prepared(self, device: torch.device) -> CostTensors:
        if device not in self._tensors:
            self._tensors[device] = self._cost_tensors(device)
        return self._tensors[device]

    def _cost_tensors(self, device: torch.device) -> CostTensors:
        """The table's costs indexed by candidate positions (``fnacli.cost.expected``)."""
        space, ref = self.space, self.space.max_arch()

        def tensor(v: object) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float64, device=device)

        n = len(space.stages) - 1
        variants = [with_out(ref, n, c) for c in space.stages[-1].outs]

        def last(groups: tuple[str, ...]) -> torch.Tensor:
            return tensor([sum(self.fixed[f][1] for f in self.fixed_needs(v) if f[0] in groups)
                           for v in variants])

        sig = self._sig(ref) if self.task_obj is not None else ()
        pieces = [(choices, tensor(_map(widths, lambda w, p=p: self.fixed[(p.name, w, sig)][1])))
                  for p, choices, widths in self._piece_widths(ref)]
        return CostTensors(stem=tensor(self.fixed[self.fixed_needs(ref)[0]][1]),
                           layers={k: tensor(v) for k, v in self._layer_costs(ref).items()},
                           last=last(("head_conv", "fc")), last_backbone=last(("head_conv",)),
                           pieces=pieces, constant=self.constant_cost())

    def _layer_costs(self, ref: ArchSpec) -> dict[tuple[int, int], list]:
        """Per layer: its cost at every candidate op and width (see ``CostTensors``)."""
        space, geo, strides = self.space, self.geometry(ref), self.stage_strides(ref)
        out: dict[tuple[int, int], list] = {}
        for s, st in enumerate(space.stages):
            ins = stage_in_outs(space, s)
            for layer in range(st.layers):
                stride = strides[s] if layer == 0 else 1
                res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]

                def cost(op: str, a: int, b: int, stride: int = stride, res: Res = res) -> int:
                    return 0 if op == SKIP else self.layers[(op, a, b, stride, *res)][0]

                ops = layer_ops(space, s, layer)
                out[(s, layer)] = ([[[cost(o, a, b) for b in st.outs] for a in ins] for o in ops]
                                   if layer == 0 else
                                   [[cost(o, c, c) for c in st.outs] for o in ops])
        return out

    def constant_cost(self) -> float:
        """What a whole network costs beyond the sum of its entries (0 for MAdds)."""
        return 0.0

    def searched_stages(self) -> tuple[int, ...]:
        return searched_stages(self.space)

    def arch_cost(self, spec: ArchSpec, scope: str = "detector",
                  stages: Iterable[int] | None = None) -> float:
        return super().arch_cost(spec, scope, self.searched_stages() if stages is None
                                 else stages)

    def expected_cost(self, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                      beta_probs: Mapping[int, torch.Tensor], scope: str = "detector"
                      ) -> torch.Tensor:
        """E[cost] under independent α (per layer) and β (per stage) distributions within
        ``scope``: the whole network (``detector``), the backbone (``backbone``: stem, every
        layer and the head conv where the task has it) or the searched blocks only
        (``blocks``: the layers of the stages that carry α or β, Jung et al.'s eq. 5); see
        ``fnacli.cost.expected``. Differentiable."""
        first = next(iter(alpha_probs.values()), next(iter(beta_probs.values()), None))
        device = first.device if first is not None else torch.device("cpu")
        return expected_cost(self.space, self._prepared(device), alpha_probs, beta_probs,
                             scope)

    def expected_madds(self, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                       beta_probs: Mapping[int, torch.Tensor],
                       scope: str = "detector") -> torch.Tensor:
        """E[MAdds] (:meth:`expected_cost` of the MAdds table)."""
        return self.expected_cost(alpha_probs, beta_probs, scope)

    # persistence -------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"schema": LUT_SCHEMA, "fnacli_version": __version__, "task": self.task,
             "input": list(self.size), "num_classes": self.num_classes,
             "space_hash": space_hash(self.space), "space": self.space.to_dict(),
             **self.entries_json()}
        return json.dumps(d, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "lookup table",
                  task_of: Callable[[str], Target] | None = None) -> Lut:
        """A table from its JSON; ``task_of`` resolves the task name it records (the
        caller's registry: the cost package looks no task up itself)."""
        from fnacli.io import load_json_text

        d = load_json_text(text, source)
        if not isinstance(d, dict) or d.get("schema") != LUT_SCHEMA:
            raise UserError(f"{source}: not an fnacli lookup table (schema {LUT_SCHEMA!r})")
        try:
            lut = cls(*saved_header(d, source, task_of))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: missing or malformed task/input/num_classes/space") \
                from None
        lut.load_saved(d, source)
        return lut

    def load_saved(self, d: Mapping, source: str) -> None:
        """A saved table's entries, and the fnacli version that made them."""
        self.load_entries(d, source)
        self.built_by = str(d.get("fnacli_version", ""))


def saved_header(d: Mapping, source: str, task_of: Callable[[str], Target] | None
                 ) -> tuple[SpaceSpec, Target | str, tuple[int, int], int]:
    """The space, task, input size and class count a saved table records (KeyError,
    TypeError or ValueError where one is missing or malformed)."""
    space = SpaceSpec.from_dict(d["space"], f"{source}: space")
    task = task_of(str(d["task"])) if task_of else str(d["task"])
    w, h = d["input"]
    return space, task, (int(w), int(h)), int(d["num_classes"])


def _flat(nested: list | int) -> list[int]:
    return [w for x in nested for w in _flat(x)] if isinstance(nested, list) else [nested]


def _map(nested: list | int, fn: Callable[[int], int]) -> list | int:
    return [_map(x, fn) for x in nested] if isinstance(nested, list) else fn(nested)


def cache_path(space: SpaceSpec, task: Target, size: tuple[int, int], num_classes: int) -> Path:
    name = (f"lut-{target_name(task)}-{size[0]}x{size[1]}-c{num_classes}-"
            f"{space_hash(space)[:16]}.json")
    return cache_dir() / "lut" / name


def build_lut(space: SpaceSpec, task: Target, size: tuple[int, int], num_classes: int | None = None,
              progress: bool = False) -> Lut:
    """A freshly built table (no cache)."""
    return Lut(space, task, size, num_classes).build(progress)


def load_or_build_lut(space: SpaceSpec, task: Target, size: tuple[int, int],
                      num_classes: int | None = None, progress: bool = False) -> Lut:
    """The cached table for (space, task, size, num_classes), built and cached on first use;
    ``cached_at`` is the cache file, None when it could not be saved."""
    num_classes = default_classes(task) if num_classes is None else num_classes
    path = cache_path(space, task, tuple(size), num_classes)
    if path.is_file():
        try:
            lut = Lut.from_json(path.read_text(), str(path), lambda name: task)
            # another version may count differently: its cached numbers are not reused
            if space_hash(lut.space) == space_hash(space) and lut.built_by == __version__:
                lut.space = space
                lut.cached_at = path
                return lut
        except (UserError, OSError):
            pass  # a stale or damaged cache file is rebuilt below
    lut = build_lut(space, task, size, num_classes, progress)
    # an unwritable cache only costs a rebuild next time (save_text logs why)
    lut.cached_at = path if save_text(path, lut.to_json(), "lookup table") else None
    return lut
