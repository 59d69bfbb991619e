"""What a search space offers the cost tables: each layer's candidates, each stage's widths,
the searched stages, the cost scopes, and architectures that differ from a reference in one
place."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import replace

from fnacli.errors import UserError
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec, Stage

# What a cost counts: the searched mixed blocks (Jung et al.'s eq. 5, FNA's searched
# backbone), the whole backbone (DetNAS's FLOPs constraint), or the whole detector.
COST_SCOPES = ("blocks", "backbone", "detector")


def space_hash(space: SpaceSpec) -> str:
    text = json.dumps(space.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_in_outs(space: SpaceSpec, s: int) -> tuple[int, ...]:
    return space.stages[s - 1].outs if s else (space.stem_out,)


def layer_ops(space: SpaceSpec, s: int, layer: int) -> tuple[str, ...]:
    return space.stages[s].layer_candidates(layer)


def check_scope(scope: str) -> str:
    if scope not in COST_SCOPES:
        raise UserError(f"--cost-scope: expected one of {', '.join(COST_SCOPES)}, got {scope!r}")
    return scope


def searched_stages(space: SpaceSpec) -> tuple[int, ...]:
    """The stages whose layers are mixed blocks: searchable ops or several widths."""
    return tuple(s for s, st in enumerate(space.stages) if st.searchable or len(st.outs) > 1)


def with_out(arch: ArchSpec, s: int, c: int) -> ArchSpec:
    stages = list(arch.stages)
    stages[s] = replace(stages[s], out=c)
    return replace(arch, stages=tuple(stages))


def with_op0(arch: ArchSpec, s: int, op: str) -> ArchSpec:
    stages = list(arch.stages)
    stages[s] = replace(stages[s], ops=(Op.parse(op), *stages[s].ops[1:]))
    return replace(arch, stages=tuple(stages))


# -- what a width depends on ---------------------------------------------------------------
Choice = tuple[str, int]  # ("out", s): stage s's width (β); ("op", s): its first layer's op (α)


def choice_values(space: SpaceSpec, choice: Choice) -> tuple:
    kind, s = choice
    return space.stages[s].outs if kind == "out" else layer_ops(space, s, 0)


def with_choice(arch: ArchSpec, choice: Choice, value: int | str) -> ArchSpec:
    kind, s = choice
    return with_out(arch, s, value) if kind == "out" else with_op0(arch, s, value)


def width_choices(space: SpaceSpec, ref: ArchSpec, width_of: Callable[[ArchSpec], int]
                  ) -> tuple[tuple[Choice, ...], list]:
    """The choices of the space that change ``width_of(arch)`` (a map's channels: a stage's
    output follows its β, the SSDLite tap the previous width and the tap layer's op) and the
    width at every combination of them: nested lists indexed by the choices' candidates in
    order (a bare int when nothing changes it). Probed from ``ref``, one choice at a time."""
    base = width_of(ref)
    choices = tuple(c for s, st in enumerate(space.stages) for c in (("out", s), ("op", s))
                    if len(choice_values(space, c)) > 1
                    and any(width_of(with_choice(ref, c, v)) != base
                            for v in choice_values(space, c)))

    def table(arch: ArchSpec, rest: tuple[Choice, ...]) -> int | list:
        if not rest:
            return width_of(arch)
        return [table(with_choice(arch, rest[0], v), rest[1:])
                for v in choice_values(space, rest[0])]

    return choices, table(ref, choices)


def random_arch(space: SpaceSpec, rng: random.Random) -> ArchSpec:
    """A uniformly drawn architecture: a candidate index per layer of each searchable stage,
    then a width index per stage with several (the draws of the one-shot search's genomes,
    so the same seed gives the same architectures)."""
    ops = {(s, i): rng.randrange(len(st.layer_candidates(i)))
           for s, st in enumerate(space.stages) if st.searchable for i in range(st.layers)}
    widths = {s: rng.randrange(len(st.outs)) for s, st in enumerate(space.stages)
              if len(st.outs) > 1}
    stages = []
    for s, st in enumerate(space.stages):
        out = st.outs[widths.get(s, len(st.outs) - 1)]
        if not st.searchable:
            stages.append(Stage(out, st.stride, st.fixed_ops))
            continue
        chosen = [st.layer_candidates(i)[ops[(s, i)]] for i in range(st.layers)]
        stages.append(Stage(out, st.stride, tuple(Op.parse(o) for o in chosen if o != SKIP)))
    return ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)
