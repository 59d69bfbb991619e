"""Expand a seed into the supernet of a search space (parameters remapped from the seed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fnacli.pipeline.common import refuse_stdout, step
from fnacli.report import Report
from fnacli.settings import MAX_THREADS, setting

if TYPE_CHECKING:
    from fnacli.spec import SpaceSpec


@dataclass
class ExpandConfig:
    seed: str | Path = setting(help="Seed MobileNetV2 checkpoint (torchvision/timm .pth, fnacli "
                        ".safetensors, torchvision:IMAGENET1K_V1 or timm:mobilenetv2_100).",
                        metavar="SEED")
    output: str | Path = setting(help="Output supernet checkpoint (.safetensors).",
                                 metavar="SUPERNET")
    space: str | Path | SpaceSpec | dict = setting("fna", "Search space: a built-in name, a JSON "
                                                   "file or '-'.", api="Also a SpaceSpec or its "
                                                   "dict.",
                                     metavar="fna|fna-channels|SPACE.json")
    masks: str = setting("non-overlapping", "Channel masks of the mixed blocks: Jung et al.'s "
                         "non-overlapping segments or FBNetV2's overlapping masks.",
                         metavar="non-overlapping|overlapping")
    mask_scope: str = setting("output", "Where a relaxed width choice applies its masks: the "
                              "block's output (Jung et al.'s eq. 2) or also its hidden channels "
                              "(block; fnacli's earlier rule).", metavar="output|block")
    arch_seed: int = setting(0, "Seed of the α/β initial noise (1e-3·N(0,1)) and of the --widen "
                             "noise.", flags=("--seed",))
    init_std: float = setting(1e-3, "Std of the α/β initial noise (0: exactly zero).", min=0.0)
    force: bool = setting(False, "Overwrite the output.")
    widen: str = setting("noise", "How channels wider than the seed's are filled (see 'fnacli "
                         "remap --widen'): zeros plus small noise (Jung et al.), zeros, or "
                         "Net2Net-style split copies.", metavar="noise|zeros|split")
    threads: int = setting(0, "CPU threads for torch ops [0: every core of this process].",
                           min=0, max=MAX_THREADS)
    noise: float | None = setting(None, min=0.0, api="Noise std of widened channels' conv "
                                  "weights, relative to each seed tensor's RMS [0.01]; widen "
                                  "'noise' only.")


@dataclass
class ExpandResult:
    output: str
    masks: str
    summary: dict  # space, architectures (candidates), params, arch_params, bytes

    def to_dict(self) -> dict:
        return self.summary | {"masks": self.masks, "output": self.output}

    def report(self) -> Report:
        s = self.summary
        return [f"{self.output}: supernet of space '{s['space']}' ({self.masks} masks): "
                f"{s['architectures']:.4g} candidate architectures, "
                f"{s['params'] / 1e6:.2f}M parameters, {s['bytes'] / 2**20:.1f} MiB"]


@step(ExpandConfig)
def expand(cfg: ExpandConfig) -> ExpandResult:
    """The supernet of ``space`` remapped from ``seed``, written to ``output``."""
    refuse_stdout(cfg.output)
    from fnacli.checkpoint import save_checkpoint
    from fnacli.io import check_writable
    from fnacli.nn.masks import check_kind, check_scope
    from fnacli.remap import check_widen
    from fnacli.search import supernet_io
    from fnacli.spec import as_space

    check_kind(cfg.masks)
    check_scope(cfg.mask_scope)
    check_widen(cfg.widen, cfg.noise)
    check_writable(cfg.output, cfg.force)  # fail before the work, not after
    space = as_space(cfg.space)
    from fnacli.pipeline.common import choose_threads, torch_threads

    with torch_threads(choose_threads(cfg.threads)):
        tensors, meta = supernet_io.expand(
            str(cfg.seed), space, cfg.masks, cfg.arch_seed, cfg.init_std, widen=cfg.widen,
            noise=cfg.noise, mask_scope=cfg.mask_scope,
            space_name=f"space {cfg.space}" if isinstance(cfg.space, str | Path) else "the space")
    save_checkpoint(cfg.output, tensors, "supernet", meta, force=cfg.force)
    return ExpandResult(str(cfg.output), cfg.masks, supernet_io.summary(space, tensors))
