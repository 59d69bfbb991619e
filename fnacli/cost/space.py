"""What a search space offers the cost tables: each layer's candidates, each stage's widths,
the searched stages, the cost scopes, and architectures that differ from a reference in one
place."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from fnacli.errors import UserError
from fnacli.spec import ArchSpec, Op, SpaceSpec

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
