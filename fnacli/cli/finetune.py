"""`fnacli finetune TARGET --task TASK --data DIR -o FINAL`: train a task's network
(``fnacli.pipeline.finetune``)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.detection.transforms import AUGMENTS
from fnacli.tasks import per_task, size_text

Schedule = StrEnum("Schedule", {n: n for n in ("cosine", "step")})
Augment = StrEnum("Augment", {n: n for n in AUGMENTS})
LR = per_task(lambda t: f"{t.recipe.lr:g} per {t.recipe.base_batch}")
CLIP = per_task(lambda t: f"{t.recipe.clip_grad:g}" if t.recipe.clip_grad else "none")
SIZE = per_task(lambda t: size_text(t.recipe.size))


@app.command("finetune", cls=c.PanelCommand)
def finetune(
    target: Path = typer.Argument(..., metavar="TARGET",
                                  help="Remapped backbone (.safetensors from 'fnacli remap') or "
                                       "a detector checkpoint to continue."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FINAL",
                                help="Output detector checkpoint (.safetensors). FINAL.ckpt "
                                     "and FINAL.metrics.jsonl are written beside it."),
    task: c.TaskName | None = typer.Option(None, "--task",
                                           help="Detector (required for a backbone TARGET)."),
    data: Path | None = c.data_opt(),
    train_ann: Path | None = c.ann_opt("train", "Training annotations."),
    train_images: Path | None = c.images_opt("train", "Training images."),
    val_ann: Path | None = c.ann_opt("val", "Validation annotations."),
    val_images: Path | None = c.images_opt("val", "Validation images."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, rich_help_panel=c.SCHEDULE,
                                      help=f"Epochs [{per_task('recipe.epochs')}]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, rich_help_panel=c.SCHEDULE,
                                          help="Global batch (split over processes) "
                                               f"[{per_task('recipe.batch_size')}]."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, rich_help_panel=c.SCHEDULE,
                                    help=f"Base lr [{LR} images, scaled to --batch-size]."),
    optimizer: c.Optim | None = typer.Option(None, "--optimizer", rich_help_panel=c.SCHEDULE,
                                             help=f"[{per_task('recipe.optimizer')}]"),
    momentum: float = typer.Option(0.9, "--momentum", min=0.0, rich_help_panel=c.SCHEDULE),
    schedule: Schedule | None = typer.Option(None, "--schedule", rich_help_panel=c.SCHEDULE,
                                             help="Cosine, or step decay ×0.1 at fixed "
                                                  "fractions [step: ssdlite 36,50,56/60; "
                                                  "retinanet 8,11/12]."),
    warmup_iters: int | None = typer.Option(None, "--warmup-iters", min=0,
                                            rich_help_panel=c.SCHEDULE,
                                            help="Linear warm-up from lr/3 [min(500, 10% of "
                                                 "the steps)]."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", min=0.0,
                                              rich_help_panel=c.SCHEDULE,
                                              help=f"[{c.WD}] (not "
                                                   "on BN/bias)."),
    clip_grad: float | None = typer.Option(None, "--clip-grad", min=0.0,
                                           rich_help_panel=c.SCHEDULE,
                                           help=f"Max gradient L2 norm [{CLIP}]; 0 = off."),
    size: str | None = c.size_opt(f"Input size [{SIZE}; WxH: longer x shorter side]."),
    augment: Augment | None = typer.Option(None, "--augment",
                                           help="ssd: photometric+expand+crop+flip; ssdlite: "
                                                "crop+flip; flip; none "
                                                f"[{per_task('default_augment')}]."),
    workers: int = c.workers_opt(),
    threads: int = c.threads_opt("CPU threads per process for torch ops (0: torch's default). "
                                 "Fewer than cores avoids oversubscription."),
    seed: int = c.seed_opt("Seed for new layers, data order, augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from FINAL.ckpt."),
    force: bool = c.force_opt("Overwrite FINAL and start over."),
    bn_recalibrate: int = typer.Option(0, "--bn-recalibrate", min=0, metavar="N",
                                       help="After training, recompute BN statistics on N "
                                            "training batches."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, metavar="E",
                                   help="Evaluate on val every E epochs and at the end."),
    checkpoint_every: int = c.checkpoint_every_opt(),
    log_every: int = c.log_every_opt(),
    tensorboard: Path | None = c.tensorboard_opt("losses, lr and AP"),
    freeze_bn: bool = typer.Option(False, "--freeze-bn",
                                   help="Keep BN statistics fixed (tiny per-process batches; "
                                        "multi-process CPU runs, which have no SyncBatchNorm)."),
    stop_after: int | None = c.stop_after_opt("Stop (checkpointed) after STEPS steps of this "
                                              "run; continue with --resume."),
    device: c.Device = c.device_opt(),
    as_json: bool = c.json_opt(),
) -> None:
    """Fine-tune a detector (SSDLite or RetinaNet) around TARGET on COCO-format data.

    Runs under torchrun for several processes/GPUs/nodes (DDP; SyncBatchNorm on GPU).
    """
    o = {k: c.value(v) for k, v in locals().items() if k != "as_json"}
    from fnacli.pipeline.finetune import FinetuneConfig
    from fnacli.pipeline.finetune import finetune as run

    c.setup_logging()
    result = run(FinetuneConfig(**o))
    if as_json and result.is_main:
        c.print_result(json.dumps(result.to_dict()))
