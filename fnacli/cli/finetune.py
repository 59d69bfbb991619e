"""`fnacli finetune TARGET --task TASK --data DIR -o FINAL`: train a task's network
(``fnacli.pipeline.finetune``)."""

from __future__ import annotations

import functools
import json
from enum import StrEnum
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.tasks import per_task, size_text

Schedule = StrEnum("Schedule", {n: n for n in ("cosine", "step")})
Augment = StrEnum("Augment", {n: n for n in c.AUGMENTS})
Inference = StrEnum("Inference", {n: n for n in ("whole", "slide")})
LR = per_task(lambda t: f"{t.recipe.lr:g} per {t.recipe.base_batch}")
CLIP = per_task(lambda t: f"{t.recipe.clip_grad:g}" if t.recipe.clip_grad else "none")
SIZE = per_task(lambda t: size_text(t.recipe.size))
_opt = functools.partial(c.option, panel=c.SCHEDULE)


@app.command("finetune", cls=c.PanelCommand)
def finetune(
    target: Path = typer.Argument(..., metavar="TARGET", help="Remapped backbone (.safetensors "
                                  "from 'fnacli remap') or a detector checkpoint to continue."),
    output: Path = c.opt("--output", "Output detector checkpoint (.safetensors). FINAL.ckpt and "
                                     "FINAL.metrics.jsonl are written beside it.", metavar="FINAL"),
    task: c.TaskName | None = typer.Option(None, "--task",
                                           help="Detector (required for a backbone TARGET)."),
    data: Path | None = c.opt("--data"),
    train_ann: Path | None = c.opt("--train-ann", "Training annotations."),
    train_images: Path | None = c.opt("--train-images", "Training images."),
    val_ann: Path | None = c.opt("--val-ann", "Validation annotations."),
    val_images: Path | None = c.opt("--val-images", "Validation images."),
    epochs: int | None = _opt(None, "--epochs", min=1,
                              help=f"Epochs [{per_task('recipe.epochs')}]."),
    batch_size: int | None = _opt(None, "--batch-size", min=1, help="Global batch (split over "
                                  f"processes) [{per_task('recipe.batch_size')}]."),
    lr: float | None = _opt(None, "--lr", min=0.0,
                            help=f"Base lr [{LR} images, scaled to --batch-size]."),
    optimizer: c.Optim | None = c.opt("--optimizer"),
    momentum: float = c.opt("--momentum"),
    schedule: Schedule | None = _opt(None, "--schedule", help="Cosine, or step decay ×0.1 at fixed "
                                     "fractions [step: ssdlite 36,50,56/60; retinanet 8,11/12]."),
    warmup_iters: int | None = _opt(None, "--warmup-iters", min=0, help="Linear warm-up from "
                                    "lr/3 [min(500, 10% of the steps)]."),
    weight_decay: float | None = _opt(None, "--weight-decay", min=0.0,
                                      help=f"[{c.WD}] (not on BN/bias)."),
    clip_grad: float | None = _opt(None, "--clip-grad", min=0.0,
                                   help=f"Max gradient L2 norm [{CLIP}]; 0 = off."),
    size: str | None = c.opt("--size", f"Input size [{SIZE}; WxH: longer x shorter side]."),
    augment: Augment | None = typer.Option(None, "--augment",
                                           help="ssd: photometric+expand+crop+flip; ssdlite: "
                                                "crop+flip; flip; none; segmentation: finetune "
                                                "(rescale 0.75-2 + crop + flip), search (rescale "
                                                f"0.5 + crop) [{per_task('default_augment')}]."),
    workers: int = c.opt("--workers"),
    threads: int = c.opt("--threads", "CPU threads per process for torch ops (0: torch's default). "
                                      "Fewer than cores avoids oversubscription."),
    seed: int = c.opt("--seed", "Seed for new layers, data order, augmentation."),
    resume: bool = c.opt("--resume", "Continue from FINAL.ckpt."),
    force: bool = c.opt("--force", "Overwrite FINAL and start over."),
    inference: Inference | None = typer.Option(
        None, "--inference", help="Segmentation: how eval predicts, on whole images or by a "
                                  "sliding window of --size (recorded in FINAL) [whole]."),
    bn_recalibrate: int = typer.Option(0, "--bn-recalibrate", min=0, metavar="N",
                                       help="After training, recompute BN statistics on N training "
                                            "batches."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, metavar="E",
                                   help="Evaluate on val every E epochs and at the end."),
    checkpoint_every: int = c.opt("--checkpoint-every"),
    log_every: int = c.opt("--log-every"),
    tensorboard: Path | None = c.tensorboard_opt("losses, lr and AP"),
    freeze_bn: bool = typer.Option(False, "--freeze-bn",
                                   help="Keep BN statistics fixed (tiny per-process batches; "
                                        "multi-process CPU runs, which have no SyncBatchNorm)."),
    stop_after: int | None = c.opt("--stop-after", "Stop (checkpointed) after STEPS steps of this "
                                                   "run; continue with --resume."),
    device: c.Device = c.opt("--device"),
    as_json: bool = c.opt("--json"),
) -> None:
    """Fine-tune a task's model around TARGET: a detector (SSDLite, RetinaNet) on COCO-format
    data, or a segmenter (DeepLabv3) on Cityscapes-layout or COCO-mask data.

    Runs under torchrun for several processes/GPUs/nodes (DDP; SyncBatchNorm on GPU).
    """
    options = dict(locals())
    from fnacli.pipeline.finetune import FinetuneConfig
    from fnacli.pipeline.finetune import finetune as run

    c.setup_logging()
    result = run(c.config(FinetuneConfig, options))
    if as_json and result.is_main:
        c.print_result(json.dumps(result.to_dict()))
