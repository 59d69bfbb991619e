"""Remap a seed's parameters onto another architecture (depth, width, kernel; FNA)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fnacli.errors import UserError
from fnacli.pipeline.common import refuse_stdout, step
from fnacli.report import Report, Table
from fnacli.settings import setting

if TYPE_CHECKING:
    import torch

    from fnacli.spec import ArchSpec


@dataclass
class RemapConfig:
    seed: str | Path = setting(
        help="MobileNetV2 checkpoint: torchvision/timm .pth/.pt (plain, wrapped or prefixed), "
             "fnacli .safetensors, torchvision:IMAGENET1K_V1 or timm:mobilenetv2_100.",
        metavar="SEED")
    spec: str | Path | ArchSpec | dict = setting(
        help="Target architecture: JSON file, '-' for stdin, or a built-in name (e.g. "
             "mobilenetv2-0.75, fna-ssdlite).", api="Also an ArchSpec or its dict.",
                                   flags=("--spec", "-s"), metavar="SPEC")
    # None: keep the remapped backbone in memory only (``result.state``)
    output: str | Path | None = setting(None, "Output backbone checkpoint (.safetensors).",
                                        metavar="OUT")
    width: str = setting("first", "Narrowing rule: first channels (FNA), or the top |BN γ|, "
                         "filter std or filter L1 channels.")
    kernel: str = setting("center", "Kernel rule: centre (pad/crop), or taps on a dilated grid.")
    noise: float | None = setting(None, min=0.0, api="Noise std of added channels' conv "
                                  "weights, relative to each seed tensor's RMS [0.01]; widen "
                                  "'noise' only.")
    rng_seed: int = setting(0, "Random seed for --noise and new layers.", flags=("--seed",))
    force: bool = setting(False, "Overwrite OUT if it exists.")
    widen: str = setting("noise", "How added channels are filled: zeros plus small noise (Jung "
                         "et al.; trainable), zeros (function preserving, but all-zero channels "
                         "get no gradient), or split (Net2Net-style copies with divided outgoing "
                         "weights: function preserving and trainable).")


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

    def report(self) -> Report:
        """The seed's and the new stages side by side, and where the checkpoint went."""
        seed, new = self.seed_spec, self.spec

        def out(r: dict, side: str) -> str:  # with the stride where the remap changed it
            moved = r["seed"]["stride"] != r["new"]["stride"]
            return f"{r[side]['out']}" + (f" s{r[side]['stride']}" if moved else "")

        rows = [("stem", str(seed.stem_out), "conv3x3", str(new.stem_out), "conv3x3", "stem")]
        rows += [(str(r["stage"]), out(r, "seed"), _ops_text(r["seed"]["ops"]), out(r, "new"),
                  _ops_text(r["new"]["ops"]), " ".join(f"L{j}" for j in r["sources"]))
                 for r in self.stages]
        if new.head_out:
            rows.append(("head", str(seed.head_out or "-"), "conv1x1", str(new.head_out),
                         "conv1x1", "head" if seed.head_out else "new (seed has none)"))
        report: Report = [Table("remap: seed → new", ("stage", "seed out", "seed ops",
                                                       "new out", "new ops", "copied from"),
                                rows, right=("stage", "seed out", "new out"))]
        if self.output is not None:
            report.append(f"wrote {self.output} ({self.params:,} parameters)")
        return report


def seed_spec(seed: str | Path) -> ArchSpec:
    """The architecture fnacli infers from ``seed``'s tensor shapes (a torchvision or timm
    MobileNetV2 state dict, wrapped or prefixed, or an fnacli backbone/model)."""
    from fnacli.checkpoint import load_seed

    return load_seed(str(seed))[1]


def _ops_text(ops: list[str]) -> str:
    """Runs of equal ops compressed: k3_e6 k3_e6 k5_e3 -> k3_e6×2 k5_e3."""
    runs = ((op, len(list(same))) for op, same in itertools.groupby(ops))
    return " ".join(op if n == 1 else f"{op}×{n}" for op, n in runs)


@step(RemapConfig)
def remap(cfg: RemapConfig) -> RemapResult:
    """``seed``'s parameters on ``spec``; written to ``output`` when given (kind
    ``backbone``), and in ``result.state`` either way."""
    from fnacli.io import check_writable
    from fnacli.remap import check_widen, resolve_noise
    from fnacli.spec import as_arch

    if cfg.output is not None:
        refuse_stdout(cfg.output)
    check_widen(cfg.widen, cfg.noise)
    seed = str(cfg.seed)
    if seed == "-":
        raise UserError("SEED: '-' is not supported for checkpoints (stdin is for specs); give "
                        "a file")
    if not seed.startswith(("torchvision:", "timm:")) and not Path(seed).is_file():
        raise UserError(f"{seed}: no such file")
    if cfg.output is not None:
        check_writable(cfg.output, cfg.force)  # fail before the slow part (importing torch)
    target = as_arch(cfg.spec)

    from fnacli.checkpoint import count_parameters, load_seed, save_checkpoint
    from fnacli.remap import remap_state

    seed_state, seed_spec = load_seed(seed)
    noise = resolve_noise(cfg.widen, cfg.noise)
    state, report = remap_state(seed_state, seed_spec, target, width=cfg.width,
                                kernel=cfg.kernel, widen=cfg.widen, noise=noise,
                                seed=cfg.rng_seed, seed_name=f"seed {seed}",
                                target_name=f"spec {cfg.spec}" if isinstance(cfg.spec, str | Path)
                                else "the target spec")
    # remap_state has checked that the output loads strictly into Backbone(target)
    strategies = {"width": cfg.width, "kernel": cfg.kernel, "widen": cfg.widen,
                  "noise": noise, "seed": cfg.rng_seed}
    if cfg.output is not None:
        meta = {"spec": target.to_dict(),
                "remap": {"seed": seed, "seed_spec": seed_spec.to_dict(), **strategies}}
        save_checkpoint(cfg.output, state, "backbone", meta, force=cfg.force)
    return RemapResult(seed, None if cfg.output is None else str(cfg.output), seed_spec,
                       target, strategies, count_parameters(state), report, state)
