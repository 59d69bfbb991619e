"""The lookup table (LUT) of a search space: MAdds of every entry its architectures can be
made of, the differentiable expected cost C(α, β), persistence and the on-disk cache.

``Lut`` is a ``CostTable`` filled for every entry a search space can produce, plus the
differentiable expected cost C(α, β) of Jung et al. (eqs. 5-8), extended so a layer's cost
uses the distribution of its input width (the previous stage's β), not just its maximum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from fnacli import __version__
from fnacli.cost.cache import cache_dir, save_text
from fnacli.cost.count import default_classes
from fnacli.cost.geometry import Res
from fnacli.cost.space import (
    check_scope,
    layer_ops,
    searched_stages,
    space_hash,
    stage_in_outs,
    with_out,
)
from fnacli.cost.table import CostTable, LayerKey
from fnacli.errors import UserError
from fnacli.spec import SKIP, ArchSpec, SpaceSpec

LUT_SCHEMA = "fnacli/lut@1"


class Lut(CostTable):
    """Every entry a space can produce, and its differentiable expected cost.

    Architecture parameters (as the search holds them): α probabilities per searchable
    (stage, layer), over ``space.stages[s].layer_candidates(layer)`` in order, and β
    probabilities per stage with more than one channel candidate, over ``outs`` (ascending).
    """

    def __init__(self, space: SpaceSpec, task: str, size: tuple[int, int],
                 num_classes: int | None = None) -> None:
        super().__init__(task, size, num_classes)
        self.space = space
        self.built_by = __version__  # the fnacli version that counted the entries
        self._tensors: dict[torch.device, dict] = {}
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

    def _space_fixed(self, ref: ArchSpec) -> list[tuple[str, int, tuple]]:
        """Fixed-part entries for every channel count the space can feed them."""
        needs = []
        space, last = self.space, self.space.stages[-1].outs
        for c in last:
            needs += self.fixed_needs(with_out(ref, len(space.stages) - 1, c))
        if self.task_obj is not None:
            needs += self.task_obj.cost_space_needs(self, ref)
        return needs

    # expected cost -----------------------------------------------------------------------
    def _prepared(self, device: torch.device) -> dict:
        if device not in self._tensors:
            self._tensors[device] = {k: (torch.tensor(v, dtype=torch.float64, device=device)
                                         if isinstance(v, list) else v)
                                     for k, v in self._tables().items()}
        return self._tensors[device]

    def _tables(self) -> dict:
        """Plain nested lists of costs, indexed by candidate positions (see expected_madds)."""
        space, ref = self.space, self.space.max_arch()
        geo = self.geometry(ref)
        strides = self.stage_strides(ref)
        t: dict = {}
        for s, st in enumerate(space.stages):
            ins = stage_in_outs(space, s)
            for layer in range(st.layers):
                stride = strides[s] if layer == 0 else 1
                res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]

                def cost(op: str, a: int, b: int, stride: int = stride, res: Res = res) -> int:
                    return 0 if op == SKIP else self.layers[(op, a, b, stride, *res)][0]

                ops = layer_ops(space, s, layer)
                if layer == 0:
                    t[("layer", s, layer)] = [[[cost(o, a, b) for b in st.outs] for a in ins]
                                              for o in ops]
                else:
                    t[("layer", s, layer)] = [[cost(o, c, c) for c in st.outs] for o in ops]
        n = len(space.stages) - 1
        variants = [with_out(ref, n, c) for c in space.stages[-1].outs]
        t["stem"] = self.fixed[self.fixed_needs(ref)[0]][1]
        # everything that varies with the last stage's width: head conv, fc, SSD extras...
        groups = ("head_conv", "fc", *(self.task_obj.cost_last_groups() if self.task_obj else ()))
        t["last"] = [sum(self.fixed[f][1] for f in self.fixed_needs(v) if f[0] in groups)
                     for v in variants]
        t["last_backbone"] = [sum(self.fixed[f][1] for f in self.fixed_needs(v)
                                  if f[0] == "head_conv") for v in variants]
        if self.task_obj is not None:
            t.update(self.task_obj.cost_tables(self, ref))
        return t

    def searched_stages(self) -> tuple[int, ...]:
        return searched_stages(self.space)

    def arch_cost(self, spec: ArchSpec, scope: str = "detector",
                  stages: Iterable[int] | None = None) -> float:
        return super().arch_cost(spec, scope, self.searched_stages() if stages is None
                                 else stages)

    def expected_madds(self, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                       beta_probs: Mapping[int, torch.Tensor],
                       scope: str = "detector") -> torch.Tensor:
        """E[MAdds] under independent α (per layer) and β (per stage) distributions, of the
        whole detector (``scope="detector"``), the backbone (``backbone``: stem, every layer
        and the head conv where the task has it) or the searched blocks only (``blocks``: the
        layers of the stages that carry α or β, Jung et al.'s eq. 5).

        A layer's cost is Σ_in Σ_out p(in) p(out) Σ_op α_op cost(op, in, out): its input width
        follows the previous stage's β, its output width its own stage's β (the layers after
        a stage's first keep the width, so in = out there); ``skip`` costs 0. Fixed parts that
        depend on a width (head conv, FPN laterals, SSDLite heads) are weighted the same way.
        One-hot α/β give the exact MAdds of the selected architecture. Differentiable; float64
        internally, returned in the probabilities' dtype.
        """
        ref = next(iter(alpha_probs.values()), next(iter(beta_probs.values()), None))
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None else torch.float64
        t = self._prepared(device)
        space = self.space

        def width(s: int) -> torch.Tensor:
            n = len(space.stages[s].outs) if s >= 0 else 1
            if n == 1:
                return torch.ones(1, dtype=torch.float64, device=device)
            return _probs(beta_probs, s, n, "beta", device)

        def alpha(s: int, layer: int) -> torch.Tensor:
            n = len(layer_ops(space, s, layer))
            if not space.stages[s].searchable or (n == 1 and (s, layer) not in alpha_probs):
                return torch.ones(1, dtype=torch.float64, device=device)
            return _probs(alpha_probs, (s, layer), n, "alpha", device)

        check_scope(scope)
        searched = set(searched_stages(space))
        total = torch.zeros((), dtype=torch.float64, device=device)
        if scope != "blocks":
            total = total + t["stem"]
        for s, st in enumerate(space.stages):
            if scope == "blocks" and s not in searched:
                continue
            p_in, p_out = width(s - 1), width(s)
            for layer in range(st.layers):
                a, cost = alpha(s, layer), t[("layer", s, layer)]
                if layer == 0:
                    total = total + torch.einsum("o,i,j,oij->", a, p_in, p_out, cost)
                else:
                    total = total + torch.einsum("o,j,oj->", a, p_out, cost)
        last = width(len(space.stages) - 1)
        if scope == "blocks":
            return total.to(dtype)
        if scope == "backbone":
            return (total + last @ t["last_backbone"]).to(dtype)
        total = total + last @ t["last"]
        if self.task_obj is not None:
            total = self.task_obj.cost_expected(total, t, alpha, width)
        return total.to(dtype)

    # persistence -------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"schema": LUT_SCHEMA, "fnacli_version": __version__, "task": self.task,
             "input": list(self.size), "num_classes": self.num_classes,
             "space_hash": space_hash(self.space), "space": self.space.to_dict(),
             **self.entries_json()}
        return json.dumps(d, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "lookup table") -> Lut:
        from fnacli.io import load_json_text

        d = load_json_text(text, source)
        if not isinstance(d, dict) or d.get("schema") != LUT_SCHEMA:
            raise UserError(f"{source}: not an fnacli lookup table (schema {LUT_SCHEMA!r})")
        try:
            space = SpaceSpec.from_dict(d["space"], f"{source}: space")
            lut = cls(space, str(d["task"]), tuple(d["input"]), int(d["num_classes"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: missing or malformed task/input/num_classes/space") \
                from None
        lut.load_entries(d, source)
        lut.built_by = str(d.get("fnacli_version", ""))
        return lut


def _probs(d: Mapping, key: object, n: int, what: str, device: torch.device) -> torch.Tensor:
    if key not in d:
        raise KeyError(f"{what} probabilities for {key} are missing")
    p = d[key]
    if p.shape != (n,):
        raise ValueError(f"{what} probabilities for {key}: expected shape ({n},), got "
                         f"{tuple(p.shape)}")
    return p.to(device=device, dtype=torch.float64)


def cache_path(space: SpaceSpec, task: str, size: tuple[int, int], num_classes: int) -> Path:
    name = f"lut-{task}-{size[0]}x{size[1]}-c{num_classes}-{space_hash(space)[:16]}.json"
    return cache_dir() / "lut" / name


def build_lut(space: SpaceSpec, task: str, size: tuple[int, int], num_classes: int | None = None,
              progress: bool = False) -> Lut:
    """A freshly built table (no cache)."""
    return Lut(space, task, size, num_classes).build(progress)


def load_or_build_lut(space: SpaceSpec, task: str, size: tuple[int, int],
                      num_classes: int | None = None, progress: bool = False) -> Lut:
    """The cached table for (space, task, size, num_classes), built and cached on first use;
    ``cached_at`` is the cache file, None when it could not be saved."""
    num_classes = default_classes(task) if num_classes is None else num_classes
    path = cache_path(space, task, tuple(size), num_classes)
    if path.is_file():
        try:
            lut = Lut.from_json(path.read_text(), str(path))
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
