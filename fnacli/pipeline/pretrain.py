"""A quick stand-in seed: torchvision's MobileNetV2 pre-trained on synthetic shapes
(``fnacli.seed_pretrain``) and saved as a plain torchvision state dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fnacli import settings
from fnacli.pipeline.common import step
from fnacli.report import Report
from fnacli.settings import MAX_THREADS, setting


@dataclass
class PretrainSeedConfig:
    output: str | Path = setting(help="Output .pth (a torchvision mobilenet_v2 state dict).",
                                 metavar="OUT")
    width: float = setting(0.5, "Width multiplier (torchvision's width_mult).")
    size: int = setting(64, "Image side of the synthetic classification task.")
    seconds: float = setting(120.0, "Training budget in wall-clock seconds.")
    max_steps: int = setting(10_000, "Stop after this many steps at the latest.", min=1)
    batch_size: int = setting(32, min=1, api="Images per step.")
    seed: int = setting(0, api="Seed of the weights and the data order.")
    threads: int = setting(0, "CPU threads for torch ops [0: every core of this process; the "
                           "data is drawn in-process].", min=0, max=MAX_THREADS)
    force: bool = setting(False, "Overwrite OUT.")
    on_step: Callable[[int, float, float], None] | None = setting(
        None, api="Called with (step, loss, elapsed seconds).")


@dataclass
class PretrainSeedResult:
    output: str
    width: float
    steps: int
    seconds: float
    train_loss: float
    val_accuracy: float  # on held-out synthetic images, 12 classes

    def to_dict(self) -> dict:
        return {"output": self.output, "width": self.width, "steps": self.steps,
                "seconds": round(self.seconds, 1),
                "train_loss": self.train_loss if self.steps else None,
                "val_accuracy": self.val_accuracy}

    def report(self) -> Report:
        return [f"seed: {self.steps} steps in {self.seconds:.0f}s, held-out accuracy "
                f"{self.val_accuracy:.1%} (12 classes, chance 8.3%) -> {self.output}"]


def check(cfg: PretrainSeedConfig) -> Path:
    """The settings and the output, checked before any work (a caller drawing a progress
    bar calls this first); the output's path."""
    from fnacli.io import check_writable
    from fnacli.seed_pretrain import check_settings

    settings.check(cfg)
    check_settings(cfg.width, cfg.size, cfg.seconds)
    return check_writable(cfg.output, cfg.force)


@step(PretrainSeedConfig)
def pretrain_seed(cfg: PretrainSeedConfig) -> PretrainSeedResult:
    """Pre-train for ``seconds`` (at most ``max_steps`` steps) and write ``output``."""
    dest = check(cfg)

    from fnacli.pipeline.common import choose_threads, torch_threads
    from fnacli.seed_pretrain import pretrain
    from fnacli.train import write_torch_atomic

    with torch_threads(choose_threads(cfg.threads)):
        model, res = pretrain(cfg.width, cfg.size, cfg.seconds, cfg.max_steps, cfg.batch_size,
                              seed=cfg.seed, on_step=cfg.on_step)
    write_torch_atomic(dest, model.state_dict())
    return PretrainSeedResult(str(dest), cfg.width, res.steps, res.seconds, res.train_loss,
                              res.val_accuracy)
