"""Remap a seed's parameters onto another architecture (depth, width, kernel; FNA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import make_config, refuse_stdout

if TYPE_CHECKING:
    import torch

    from fnacli.spec import ArchSpec


@dataclass
class RemapConfig:
    seed: str  # MobileNetV2 checkpoint (.pth/.pt, .safetensors, torchvision:…, timm:…)
    spec: str | ArchSpec  # target architecture: spec object, JSON file, '-' or built-in name
    output: str | Path | None = None  # backbone checkpoint; None: keep it in memory only
    width: str = "first"  # first | bn | std | l1
    kernel: str = "center"  # center | dilate
    noise: float | None = None  # relative noise std of added channels [0.01 under "noise"]
    rng_seed: int = 0
    force: bool = False
    widen: str = "noise"  # how added channels are filled: noise | zeros | split


@dataclass
class RemapResult:
    seed: str
    output: str | None
    seed_spec: ArchSpec
    spec: ArchSpec
    strategies: dict
    params: int
    stages: list[dict]  # per stage: seed/new out, ops, stride and the seed layers copied
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "output": self.output, "seed_spec": self.seed_spec.to_dict(),
                "spec": self.spec.to_dict(), "strategies": self.strategies,
                "params": self.params, "stages": self.stages}


def remap(*args: Any, **kwargs: Any) -> RemapResult:
    """``seed``'s parameters on ``spec``; written to ``output`` when given (kind
    ``backbone``), and in ``result.state`` either way."""
    cfg = make_config(RemapConfig, args, kwargs)
    from fnacli.io import check_writable
    from fnacli.remap import check_widen, resolve_noise
    from fnacli.spec import ArchSpec, load_arch

    if cfg.output is not None:
        refuse_stdout(cfg.output)
    check_widen(cfg.widen, cfg.noise)
    if cfg.seed == "-":
        raise UserError("SEED: '-' is not supported for checkpoints (stdin is for specs); give "
                        "a file")
    if not cfg.seed.startswith(("torchvision:", "timm:")) and not Path(cfg.seed).is_file():
        raise UserError(f"{cfg.seed}: no such file")
    if cfg.output is not None:
        check_writable(cfg.output, cfg.force)  # fail before the slow part (importing torch)
    target = cfg.spec if isinstance(cfg.spec, ArchSpec) else load_arch(cfg.spec)

    from fnacli.checkpoint import count_parameters, load_seed, save_checkpoint
    from fnacli.remap import remap_state

    seed_state, seed_spec = load_seed(cfg.seed)
    noise = resolve_noise(cfg.widen, cfg.noise)
    state, report = remap_state(seed_state, seed_spec, target, width=cfg.width,
                                kernel=cfg.kernel, widen=cfg.widen, noise=noise,
                                seed=cfg.rng_seed, seed_name=f"seed {cfg.seed}",
                                target_name=f"spec {cfg.spec}" if isinstance(cfg.spec, str | Path)
                                else "the target spec")
    # remap_state has checked that the output loads strictly into Backbone(target)
    strategies = {"width": cfg.width, "kernel": cfg.kernel, "widen": cfg.widen,
                  "noise": noise, "seed": cfg.rng_seed}
    if cfg.output is not None:
        meta = {"spec": target.to_dict(),
                "remap": {"seed": cfg.seed, "seed_spec": seed_spec.to_dict(), **strategies}}
        save_checkpoint(cfg.output, state, "backbone", meta, force=cfg.force)
    return RemapResult(cfg.seed, None if cfg.output is None else str(cfg.output), seed_spec,
                       target, strategies, count_parameters(state), report, state)
