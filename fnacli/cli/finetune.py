"""`fnacli finetune TARGET --task TASK --data DIR -o FINAL`: train a task's network
(``fnacli.pipeline.finetune``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.finetune import FinetuneConfig

Inference = StrEnum("Inference", {n: n for n in ("whole", "slide")})
o = c.options_of(FinetuneConfig)


@app.command("finetune", cls=c.PanelCommand)
def finetune(
    target: Path = c.argument(FinetuneConfig, "target"),
    output: Path = o("output"),
    task: c.TaskName | None = o("task", metavar=None),  # its choices
    data: Path | None = o("data"),
    train_ann: Path | None = o("train_ann"),
    train_images: Path | None = o("train_images"),
    val_ann: Path | None = o("val_ann"),
    val_images: Path | None = o("val_images"),
    epochs: int | None = o("epochs"),
    batch_size: int | None = o("batch_size"),
    lr: float | None = o("lr"),
    optimizer: c.Optim | None = o("optimizer"),
    momentum: float = o("momentum"),
    schedule: c.Schedule | None = o("schedule"),
    warmup_iters: int | None = o("warmup_iters"),
    weight_decay: float | None = o("weight_decay"),
    clip_grad: float | None = o("clip_grad"),
    size: str | None = o("size"),
    augment: c.Augment | None = o("augment"),
    workers: int = o("workers"),
    threads: int = o("threads"),
    seed: int = o("seed"),
    resume: bool = o("resume"),
    force: bool = o("force"),
    inference: Inference | None = o("inference"),
    bn_recalibrate: int = o("bn_recalibrate"),
    eval_every: int = o("eval_every"),
    checkpoint_every: int = o("checkpoint_every"),
    log_every: int = o("log_every"),
    tensorboard: Path | None = o("tensorboard"),
    freeze_bn: bool = o("freeze_bn"),
    stop_after: int | None = o("stop_after"),
    device: c.Device = o("device"),
    as_json: bool = c.opt("--json"),
) -> None:
    """Fine-tune a task's model around TARGET: a detector (SSDLite, RetinaNet) on COCO-format
    data, or a segmenter (DeepLabv3) on Cityscapes-layout or COCO-mask data.

    Runs under torchrun for several processes/GPUs/nodes (DDP; SyncBatchNorm on GPU).
    """
    options = dict(locals())
    from fnacli.pipeline.finetune import finetune as run

    c.setup_logging()
    result = run(c.config(FinetuneConfig, options))
    if as_json and result.is_main:
        c.print_json(result.to_dict())
