"""`fnacli finetune TARGET --task ssdlite|retinanet --data DIR -o FINAL`: train a detector.

TARGET is a remapped backbone (fresh detector around it) or a detector checkpoint (continue
training it). Writes FINAL (a detector checkpoint), FINAL.ckpt (training state for
--resume) and FINAL.metrics.jsonl.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fnacli.cli.app import app
from fnacli.cli.common import checkpoint_output, err_console, fail, print_result, setup_logging

if TYPE_CHECKING:
    from fnacli.train import DistEnv

# The papers' fine-tuning recipes (FNA's text; its released configs' values where the text
# is silent), lr given for ``base_batch`` images per step and scaled linearly with
# --batch-size. SSDLite: 60 epochs, drops at 36/50/56 (the released config's 300 epochs are
# 60 over a 5x repeated dataset). See docs/training.md.
RECIPES: dict[str, dict] = {
    "ssdlite": {"optimizer": "rmsprop", "lr": 0.2, "base_batch": 512, "batch_size": 32,
                "momentum": 0.9, "weight_decay": 4e-5, "schedule": "step",
                "milestones": (36 / 60, 50 / 60, 56 / 60), "warmup_iters": 500, "epochs": 60,
                "clip_grad": None, "size": (320, 320)},
    "retinanet": {"optimizer": "sgd", "lr": 0.05, "base_batch": 32, "batch_size": 8,
                  "momentum": 0.9, "weight_decay": 5e-5, "schedule": "step",
                  "milestones": (8 / 12, 11 / 12), "warmup_iters": 500, "epochs": 12,
                  "clip_grad": 35.0, "size": (1333, 800)},
}


class Task(StrEnum):
    ssdlite = "ssdlite"
    retinanet = "retinanet"


class Optim(StrEnum):
    sgd = "sgd"
    rmsprop = "rmsprop"


class Schedule(StrEnum):
    cosine = "cosine"
    step = "step"


class Augment(StrEnum):
    ssd = "ssd"
    ssdlite = "ssdlite"
    flip = "flip"
    none = "none"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """'320' -> (320, 320); '1333x800' -> (1333, 800) as (width, height)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals, default=0) < 32:
        fail(f"{flag}: expected N or WxH with sides of at least 32 pixels, got {text!r}")
    return (vals[0], vals[-1])


@app.command("finetune")
def finetune(
    target: Path = typer.Argument(..., metavar="TARGET",
                                  help="Remapped backbone (.safetensors from 'fnacli remap') or "
                                       "a detector checkpoint to continue."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FINAL",
                                help="Output detector checkpoint (.safetensors). FINAL.ckpt "
                                     "and FINAL.metrics.jsonl are written beside it."),
    task: Task | None = typer.Option(None, "--task",
                                     help="Detector (required for a backbone TARGET)."),
    data: Path | None = typer.Option(None, "--data", metavar="DIR",
                                     help="COCO-layout dataset folder."),
    train_ann: Path | None = typer.Option(None, "--train-ann", help="Training annotations."),
    train_images: Path | None = typer.Option(None, "--train-images", help="Training images."),
    val_ann: Path | None = typer.Option(None, "--val-ann", help="Validation annotations."),
    val_images: Path | None = typer.Option(None, "--val-images", help="Validation images."),
    epochs: int | None = typer.Option(None, "--epochs", min=1,
                                      help="Epochs [ssdlite 60, retinanet 12]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1,
                                          help="Global batch (split over processes) "
                                               "[ssdlite 32, retinanet 8]."),
    lr: float | None = typer.Option(None, "--lr", min=0.0,
                                    help="Base lr [ssdlite 0.2 per 512 images, retinanet 0.05 "
                                         "per 32, scaled to --batch-size]."),
    optimizer: Optim | None = typer.Option(None, "--optimizer",
                                           help="[ssdlite rmsprop, retinanet sgd]"),
    momentum: float = typer.Option(0.9, "--momentum", min=0.0),
    schedule: Schedule | None = typer.Option(None, "--schedule",
                                             help="Cosine, or step decay ×0.1 at fixed "
                                                  "fractions [step: ssdlite 36,50,56/60; "
                                                  "retinanet 8,11/12]."),
    warmup_iters: int | None = typer.Option(None, "--warmup-iters", min=0,
                                            help="Linear warm-up from lr/3 [min(500, 10% of "
                                                 "the steps)]."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", min=0.0,
                                              help="[ssdlite 4e-5, retinanet 5e-5] (not on "
                                                   "BN/bias)."),
    clip_grad: float | None = typer.Option(None, "--clip-grad", min=0.0,
                                           help="Max gradient L2 norm [retinanet 35, ssdlite "
                                                "none]; 0 = off."),
    size: str | None = typer.Option(None, "--size", metavar="N|WxH",
                                    help="Input size [ssdlite 320, retinanet 1333x800 (longer "
                                         "x shorter side)]."),
    augment: Augment | None = typer.Option(None, "--augment",
                                           help="ssd: photometric+expand+crop+flip; ssdlite: "
                                                "crop+flip; flip; none [ssdlite ssd, "
                                                "retinanet flip]."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loading processes."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads per process for torch ops (0: torch's "
                                     "default). Fewer than cores avoids oversubscription."),
    seed: int = typer.Option(0, "--seed", help="Seed for new layers, data order, "
                                               "augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from FINAL.ckpt."),
    force: bool = typer.Option(False, "--force", help="Overwrite FINAL and start over."),
    bn_recalibrate: int = typer.Option(0, "--bn-recalibrate", min=0, metavar="N",
                                       help="After training, recompute BN statistics on N "
                                            "training batches."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, metavar="E",
                                   help="Evaluate on val every E epochs and at the end."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, metavar="STEPS",
                                         help="Training state every STEPS steps (always at "
                                              "the end of every epoch)."),
    freeze_bn: bool = typer.Option(False, "--freeze-bn",
                                   help="Keep BN statistics fixed (tiny per-process batches; "
                                        "multi-process CPU runs, which have no SyncBatchNorm)."),
    stop_after: int | None = typer.Option(None, "--stop-after", min=1, metavar="STEPS",
                                          help="Stop (checkpointed) after STEPS steps of this "
                                               "run; continue with --resume."),
    device: Device = typer.Option(Device.auto, "--device", help="auto: CUDA when available."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Fine-tune a detector (SSDLite or RetinaNet) around TARGET on COCO-format data.

    Runs under torchrun for several processes/GPUs/nodes (DDP; SyncBatchNorm on GPU).
    """
    from fnacli.train import init_distributed, shutdown_distributed

    checkpoint_output(output)
    size_wh = parse_size(size) if size else None  # bad options fail before anything else
    env = init_distributed(None if device is Device.auto else device.value)
    setup_logging(env.is_main)
    try:
        summary = _run(dict(locals()), env)
    finally:
        shutdown_distributed(env)
    if as_json and env.is_main:
        print_result(json.dumps(summary))


def _recipe(o: dict, task: str, info_size: tuple[int, int] | None) -> dict:
    """The run's settings: given options, else the task's recipe (lr scaled to the batch)."""
    r = RECIPES[task]
    batch = o["batch_size"] or r["batch_size"]
    return {
        "epochs": o["epochs"] or r["epochs"], "batch_size": batch,
        "lr": o["lr"] if o["lr"] is not None else r["lr"] * batch / r["base_batch"],
        "optimizer": o["optimizer"].value if o["optimizer"] else r["optimizer"],
        "schedule": o["schedule"].value if o["schedule"] else r["schedule"],
        "milestones": r["milestones"],
        "weight_decay": o["weight_decay"] if o["weight_decay"] is not None
        else r["weight_decay"],
        "clip_grad": (o["clip_grad"] or None) if o["clip_grad"] is not None else r["clip_grad"],
        "size": o["size_wh"] or info_size or r["size"],
        "augment": o["augment"].value if o["augment"] else
        {"ssdlite": "ssd", "retinanet": "flip"}[task],
        "warmup": o["warmup_iters"],
    }


def _run(o: dict, env: DistEnv) -> dict:
    import torch

    if o["threads"]:
        torch.set_num_threads(o["threads"])

    from fnacli.checkpoint import read_checkpoint
    from fnacli.detection.checkpoint import (
        DetectorInfo,
        build,
        detector_info,
        load_backbone_into,
        load_state_strict,
    )
    from fnacli.detection.data import (
        batch_to,
        check_same_categories,
        collate,
        find_split,
        load_split,
    )
    from fnacli.detection.evaluate import evaluate
    from fnacli.detection.models import label_offset
    from fnacli.detection.transforms import eval_transform, train_transform
    from fnacli.io import check_writable
    from fnacli.train import TrainConfig, barrier, fit, recalibrate_bn

    output: Path = o["output"]
    state_path = Path(f"{output}.ckpt")
    metrics_path = Path(f"{output}.metrics.jsonl")
    check_writable(output, o["force"])
    if o["resume"]:
        if not state_path.exists():
            fail(f"{state_path}: no training state to resume from (run without --resume)")
    elif not o["force"]:
        for p in (state_path, metrics_path):
            if p.exists():
                fail(f"{p}: exists from an earlier run (continue it with --resume, or start "
                     "over with --force)")

    # the starting point: a backbone (fresh detector around it) or a detector (continue)
    ckpt = read_checkpoint(o["target"])
    prior: DetectorInfo | None = None
    if ckpt.kind == "detector":
        prior = detector_info(ckpt, o["target"])
        if o["task"] and o["task"].value != prior.task:
            fail(f"{o['target']}: a {prior.task} detector, but --task is {o['task'].value}")
        task = prior.task
    elif ckpt.kind == "backbone":
        if ckpt.spec is None:
            fail(f"{o['target']}: backbone checkpoint without a spec in its metadata")
        if o["task"] is None:
            fail("--task: required when TARGET is a backbone (ssdlite or retinanet)")
        task = o["task"].value
    else:
        fail(f"{o['target']}: a {ckpt.kind} checkpoint; finetune needs a backbone (derive + "
             "remap a searched network first) or a detector")
    spec = prior.spec if prior else ckpt.spec
    r = _recipe(o, task, prior.size if prior else None)

    # data: validated completely before any training
    offset = label_offset(task)
    train_files = find_split(o["data"], "train", o["train_ann"], o["train_images"])
    train_set = load_split(train_files, train=True, label_offset=offset,
                           transform=train_transform(r["augment"]), seed=o["seed"])
    val_set = None
    if o["eval_every"]:
        val_files = find_split(o["data"], "val", o["val_ann"], o["val_images"])
        val_set = load_split(val_files, train=False, label_offset=offset,
                             transform=eval_transform())
        check_same_categories(train_set.categories(), val_set.categories(),
                              str(train_files.ann), str(val_files.ann))
    if prior:
        check_same_categories(prior.categories, train_set.categories(), str(o["target"]),
                              str(train_files.ann))

    info = DetectorInfo(spec, task, train_set.num_classes, r["size"], train_set.categories())
    torch.manual_seed(o["seed"])  # fresh layers are a function of --seed
    model = build(info)
    if prior:
        load_state_strict(model, ckpt.tensors, o["target"])
    else:
        dropped = load_backbone_into(model, ckpt.tensors, o["target"])
        if dropped and env.is_main:
            logging.getLogger("fnacli").info("%s: %d head-conv tensors not used by %s",
                                             o["target"], dropped, task)

    per_epoch = len(train_set) // r["batch_size"]
    total = r["epochs"] * per_epoch
    warmup = r["warmup"] if r["warmup"] is not None else min(500, total // 10)
    cfg = TrainConfig(
        epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], optimizer=r["optimizer"],
        momentum=o["momentum"], weight_decay=r["weight_decay"], schedule=r["schedule"],
        milestones=r["milestones"], warmup_iters=warmup, clip_grad=r["clip_grad"],
        seed=o["seed"], workers=o["workers"], freeze_bn=o["freeze_bn"],
        checkpoint_every=o["checkpoint_every"])
    identity = {"task": task, "size": list(r["size"]), "augment": r["augment"],
                "categories": [c["id"] for c in info.categories],
                "train_images": len(train_set)}
    if env.is_main:
        err_console.print(
            f"finetune {task} {r['size'][0]}x{r['size'][1]}: {len(train_set)} images, "
            f"{info.num_classes} classes, {cfg.epochs} epochs x {per_epoch} steps, batch "
            f"{cfg.batch_size} ({env.world} process{'es' if env.world > 1 else ''}, "
            f"{env.device.type}), {cfg.optimizer} lr {cfg.lr:.4g} {cfg.schedule}, warm-up "
            f"{warmup}, augment {r['augment']}")
        if env.distributed and env.device.type == "cpu" and not cfg.freeze_bn:
            err_console.print("note: SyncBatchNorm needs GPUs; on CPU each process keeps its "
                              "own BN batch statistics (--freeze-bn avoids the difference)")

    def loss_fn(net: torch.nn.Module, batch: Any, device: torch.device) -> dict:
        images, targets = batch_to(batch, device)
        return net(images, targets)

    def on_epoch_end(epoch: int, net: torch.nn.Module) -> dict | None:
        last = epoch + 1 == cfg.epochs
        if not (val_set and env.is_main and ((epoch + 1) % o["eval_every"] == 0 or last)):
            return None
        res = evaluate(net, val_set, batch_size=max(1, cfg.batch_size // env.world),
                       workers=o["workers"], device=env.device)
        return {k: res.stats[k] for k in ("AP", "AP50", "AP75")}

    result = fit(model, train_set, loss_fn, cfg, env, state_path=state_path,
                 metrics_path=metrics_path, resume=o["resume"], collate_fn=collate,
                 identity=identity, on_epoch_end=on_epoch_end, stop_after=o["stop_after"],
                 desc=f"finetune {task}")
    summary = {"output": str(output), "task": task, "steps": result.steps,
               "epochs": result.epochs, "finished": result.finished,
               "last_loss": result.last_loss}
    if not result.finished:
        if env.is_main:
            err_console.print(f"stopped after {result.steps} steps; training state in "
                              f"{state_path} (continue with --resume)")
        return summary
    if o["bn_recalibrate"]:
        # Every process runs the same batches: with SyncBatchNorm all of them must take
        # part, and the statistics come out identical everywhere.
        import itertools

        from torch.utils.data import DataLoader

        plain = train_set.subset(range(len(train_set)))  # a view: no second validation
        plain.transform = eval_transform()
        g = torch.Generator().manual_seed(o["seed"])
        loader = DataLoader(plain, batch_size=max(1, cfg.batch_size // env.world),
                            shuffle=True, generator=g, collate_fn=collate,
                            num_workers=o["workers"])
        batches = itertools.islice(loader, o["bn_recalibrate"])
        used = recalibrate_bn(model, batches, lambda m, b: m(*batch_to(b, env.device)))
        if env.is_main:
            err_console.print(f"BN statistics recalibrated on {used} training batches")
        summary["bn_recalibrated_batches"] = used
    if env.is_main:
        from fnacli.detection.checkpoint import save_detector

        info.extra = {"finetune": {"epochs": cfg.epochs, "steps": result.steps,
                                   "batch_size": cfg.batch_size, "lr": cfg.lr,
                                   "optimizer": cfg.optimizer, "schedule": cfg.schedule,
                                   "augment": r["augment"], "seed": cfg.seed,
                                   "bn_recalibrate": o["bn_recalibrate"]}}
        save_detector(output, model.cpu(), info, force=True)
        loss = f"{result.last_loss:.4f}" if result.last_loss is not None else "-"
        err_console.print(f"detector: {result.steps} steps, last loss {loss} -> {output}")
    barrier(env)
    return summary
