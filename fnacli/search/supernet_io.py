"""Supernet checkpoints: building one from a seed (``fnacli expand``) and reading one back.

A supernet checkpoint (kind ``supernet``; ``searched`` after a search) holds the supernet's
weights under ``Supernet`` state-dict keys, the architecture logits ``arch.alpha.S.L`` and
``arch.beta.S``, and in metadata the space (``space``), the seed's spec (``seed_spec``) and the
mask family (``masks``) and where relaxed masks apply (``mask_scope``; absent: ``output``,
Jung et al.'s eq. 2). A searched checkpoint adds ``search`` (settings, epoch, history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fnacli.errors import UserError
from fnacli.nn.masks import DEFAULT_KIND, DEFAULT_SCOPE, check_kind, check_scope
from fnacli.search import arch as A
from fnacli.spec import ArchSpec, SpaceSpec

SUPERNET_KINDS = ("supernet", "searched")


@dataclass
class SupernetCheckpoint:
    """A supernet or searched checkpoint, split into its parts."""

    space: SpaceSpec
    masks: str
    weights: dict[str, torch.Tensor]
    alpha: A.AlphaDict
    beta: A.BetaDict
    seed_spec: ArchSpec | None
    kind: str
    meta: dict = field(default_factory=dict)
    mask_scope: str = DEFAULT_SCOPE

    @property
    def min_depth(self) -> int:
        return int(self.meta.get("search", {}).get("min_depth", 0))


def expand(seed_arg: str, space: SpaceSpec, masks: str = DEFAULT_KIND, seed: int = 0,
           init_std: float = A.INIT_STD, widen: str = "noise", noise: float | None = None,
           space_name: str = "the space", mask_scope: str = DEFAULT_SCOPE
           ) -> tuple[dict[str, torch.Tensor], dict]:
    """Supernet tensors (weights remapped from the seed + α/β) and metadata for ``space``
    (``space_name``: its file or built-in name, for error messages).

    ``widen``/``noise``: how channels wider than the seed's are filled (``fnacli.remap``);
    the default adds Jung et al.'s small noise so that wider candidates can learn."""
    from fnacli.checkpoint import load_seed
    from fnacli.nn.supernet import Supernet
    from fnacli.remap import resolve_noise, supernet_state_from_seed

    check_kind(masks)
    check_scope(mask_scope)
    seed_state, seed_spec = load_seed(seed_arg)
    if len(seed_spec.stages) != len(space.stages):
        raise UserError(f"{seed_arg}: the seed has {len(seed_spec.stages)} stages but "
                        f"{space_name} has {len(space.stages)}; remapping is per stage, so they "
                        "must match")
    noise = resolve_noise(widen, noise)
    state = supernet_state_from_seed(space, seed_state, seed_spec, widen=widen, noise=noise,
                                     seed=seed)
    with torch.device("meta"):
        ref = Supernet(space, masks).state_dict()
    missing = [k for k in ref if k not in state]
    if missing:  # a bug, not bad input: the remapper and the supernet disagree on keys
        raise AssertionError(f"supernet init is missing {missing[:3]}")
    tensors = {k: state[k] for k in ref}
    alpha, beta = A.init_logits(space, seed, init_std)
    tensors.update(A.to_tensors(alpha, beta))
    space_dict = {**space.to_dict(), "name": space.name}  # the name survives the round trip
    meta = {"space": space_dict, "seed_spec": seed_spec.to_dict(), "masks": masks,
            "mask_scope": mask_scope, "arch_init": {"std": init_std, "seed": seed},
            "widen": {"rule": widen, "noise": noise, "seed": seed}}
    return tensors, meta


def read_supernet(path: str | Path) -> SupernetCheckpoint:
    """A supernet/searched checkpoint; UserError naming the file for anything else."""
    from fnacli.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.kind not in SUPERNET_KINDS:
        raise UserError(f"{path}: a {ckpt.kind} checkpoint; expected a supernet (from 'fnacli "
                        "expand') or a searched checkpoint (from 'fnacli search')")
    if ckpt.space is None:
        raise UserError(f"{path}: {ckpt.kind} checkpoint without a 'space' in its metadata")
    masks = ckpt.meta.get("masks", DEFAULT_KIND)
    try:
        check_kind(masks)
    except UserError:
        raise UserError(f"{path}: metadata 'masks' is {masks!r}; expected non-overlapping or "
                        "overlapping") from None
    scope = ckpt.meta.get("mask_scope", DEFAULT_SCOPE)
    try:
        check_scope(scope)
    except UserError:
        raise UserError(f"{path}: metadata 'mask_scope' is {scope!r}; expected output or "
                        "block") from None
    alpha, beta = A.from_tensors(ckpt.space, ckpt.tensors, str(path))
    weights = {k: v for k, v in ckpt.tensors.items() if not A.is_arch_name(k)}
    seed_spec = None
    if "seed_spec" in ckpt.meta:
        seed_spec = ArchSpec.from_dict(ckpt.meta["seed_spec"], f"{path}: metadata seed_spec")
    return SupernetCheckpoint(ckpt.space, masks, weights, alpha, beta, seed_spec, ckpt.kind,
                              ckpt.meta, scope)


def load_weights(supernet: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load supernet weights; a head the module does not have (RetinaNet) is ignored."""
    own = supernet.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise UserError(f"{source}: supernet tensor {missing[0]!r} is missing (the file does not "
                        "match its space)")
    bad = [k for k in own if tuple(weights[k].shape) != tuple(own[k].shape)]
    if bad:
        raise UserError(f"{source}: supernet tensor {bad[0]!r} has shape "
                        f"{list(weights[bad[0]].shape)}, expected {list(own[bad[0]].shape)}")
    supernet.load_state_dict({k: weights[k] for k in own})


def summary(space: SpaceSpec, tensors: dict[str, torch.Tensor]) -> dict:
    """What ``fnacli expand`` reports: candidate architectures and the supernet's size."""
    from fnacli.checkpoint import count_parameters

    weights = {k: t for k, t in tensors.items() if not A.is_arch_name(k)}
    params = count_parameters(weights)
    arch = sum(t.numel() for k, t in tensors.items() if A.is_arch_name(k))
    return {"space": space.name, "architectures": space.num_architectures(),
            "params": params, "arch_params": arch,
            "bytes": sum(t.numel() * t.element_size() for t in tensors.values())}
