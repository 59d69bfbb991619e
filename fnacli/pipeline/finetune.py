"""Fine-tune a task's network around a remapped backbone, or continue a saved one.

Writes OUTPUT (the model checkpoint), OUTPUT.ckpt (training state for ``resume``) and
OUTPUT.metrics.jsonl. Settings left at None take the task's recipe (``Task.recipe``; the
lr is scaled linearly to the batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import (
    Reporter,
    TrainOptions,
    as_size,
    check_fresh_run,
    in_processes,
    refuse_stdout,
    run_files,
    step,
)
from fnacli.settings import SCHEDULE, setting


@dataclass
class FinetuneConfig(TrainOptions):
    """What to fine-tune (and :class:`TrainOptions`)."""

    # remapped backbone, or a model checkpoint to continue
    target: str | Path = setting(help="Remapped backbone (.safetensors from 'fnacli remap') or a "
                                 "detector checkpoint to continue.", metavar="TARGET")
    output: str | Path = setting(help="Output detector checkpoint (.safetensors). FINAL.ckpt and "
                                 "FINAL.metrics.jsonl are written beside it.", metavar="FINAL")
    schedule: str | None = setting(None, "Cosine, or step decay ×0.1 at fixed fractions [step: "
                                   "ssdlite 36,50,56/60; retinanet 8,11/12].", group=SCHEDULE)
    bn_recalibrate: int = setting(0, "After training, recompute BN statistics on N training "
                                  "batches.", min=0, metavar="N")
    # segmentation: whole | slide (recorded for eval)
    inference: str | None = setting(None, "Segmentation: how eval predicts, on whole images or "
                                    "by a sliding window of --size (recorded in FINAL) [whole].")
    eval_every: int = setting(0, "Evaluate on val every E epochs and at the end.", min=0,
                              metavar="E")
    freeze_bn: bool = setting(False, "Keep BN statistics fixed (tiny per-process batches; "
                              "multi-process CPU runs, which have no SyncBatchNorm).")


@dataclass
class FinetuneResult:
    output: str
    task: str
    steps: int
    epochs: int
    finished: bool
    last_loss: float | None  # the last value logged (the closing line's "last loss")
    bn_recalibrated_batches: int | None = None
    is_main: bool = True  # False in the other processes of a distributed run
    # the last evaluation on val (eval_every): the task's epoch metrics (AP…, or mIoU…)
    metrics: dict[str, float] | None = None
    metrics_epoch: int | None = None  # the epoch (1-based) that evaluation followed

    def to_dict(self) -> dict:
        d: dict = {"output": self.output, "task": self.task, "steps": self.steps,
                   "epochs": self.epochs, "finished": self.finished,
                   "last_loss": self.last_loss}
        if self.bn_recalibrated_batches is not None:
            d["bn_recalibrated_batches"] = self.bn_recalibrated_batches
        if self.metrics is not None:
            d["metrics"] = {"epoch": self.metrics_epoch, **self.metrics}
        return d

    def report(self) -> list:
        """Nothing beyond the step's own messages (the ``fnacli`` logger), which already end
        with the summary line; the command prints no table."""
        return []


@step(FinetuneConfig)
def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune a task's network around a remapped backbone ``target`` (or continue a saved
    model) and write ``output``, with ``output``.ckpt (training state for ``resume``) and
    ``output``.metrics.jsonl beside it. Settings left at None take the task's recipe
    (``fnacli.get_task(task).recipe``; lr scaled linearly to the batch size). Runs under
    torchrun for several processes (DDP). ``result.metrics`` holds the last evaluation."""
    refuse_stdout(cfg.output)
    as_size(cfg.size)  # bad options fail before anything else
    from fnacli.progress import tensorboard_dir

    tensorboard_dir(cfg.tensorboard)
    return in_processes(_run, cfg)


def _settings(cfg: FinetuneConfig, task: Any, size: tuple[int, int] | None) -> dict:
    """The run's settings: given options, else the task's recipe (lr scaled to the batch)."""
    r = task.recipe
    batch = cfg.batch_size or r.batch_size
    return {
        "epochs": cfg.epochs or r.epochs, "batch_size": batch,
        "lr": cfg.lr if cfg.lr is not None else r.lr_for(batch),
        "optimizer": cfg.optimizer or r.optimizer,
        "schedule": cfg.schedule or r.schedule,
        "milestones": r.milestones,
        "weight_decay": cfg.weight_decay if cfg.weight_decay is not None else r.weight_decay,
        "clip_grad": (cfg.clip_grad or None) if cfg.clip_grad is not None else r.clip_grad,
        "size": size or r.size,
        "augment": cfg.augment or task.default_augment,
    }


def _start(cfg: FinetuneConfig) -> tuple[Any, Any, Any]:
    """(checkpoint, task, prior model info or None) of the target."""
    from fnacli.model_checkpoint import MODEL_KINDS, detector_info, read_model_checkpoint
    from fnacli.tasks import get_task, task_names

    ckpt = read_model_checkpoint(cfg.target)
    if ckpt.kind in MODEL_KINDS:
        prior = detector_info(ckpt, cfg.target)
        if cfg.task and cfg.task != prior.task:
            raise UserError(f"{cfg.target}: a {prior.task} {ckpt.kind}, but --task is "
                            f"{cfg.task}")
        return ckpt, get_task(prior.task), prior
    if ckpt.kind == "backbone":
        if ckpt.spec is None:
            raise UserError(f"{cfg.target}: backbone checkpoint without a spec in its metadata")
        if cfg.task is None:
            raise UserError("--task: required when TARGET is a backbone "
                            f"({' or '.join(task_names())})")
        return ckpt, get_task(cfg.task), None
    raise UserError(f"{cfg.target}: a {ckpt.kind} checkpoint; finetune needs a backbone "
                    "(derive + remap a searched network first) or a detector")


def _run(cfg: FinetuneConfig, env: Any, images: Any = None) -> FinetuneResult:
    """The fine-tuning in the process group ``env``. ``images``: train on these images of
    the training split (a view of it, any transform) instead of the whole split (the
    one-shot search's confirmation: the supernet's training images, never its fitness
    images)."""
    import torch

    from fnacli.io import check_writable
    from fnacli.model_checkpoint import DetectorInfo, model_kind
    from fnacli.train import barrier, fit
    from fnacli.validation import check_bn_batch, check_lr

    say = Reporter(cfg.on_message, env.is_main)
    check_lr(cfg.lr)
    output = Path(cfg.output)
    state_path, metrics_path = run_files(output)
    # resume: this run's own output (an extended run, --epochs raised, rewrites it)
    check_writable(output, cfg.force or cfg.resume, also=(".ckpt", ".metrics.jsonl"))
    check_fresh_run(state_path, metrics_path, cfg.resume, cfg.force)

    # the starting point: a backbone (fresh model around it) or a saved model (continue)
    ckpt, task, prior = _start(cfg)
    spec = prior.spec if prior else ckpt.spec
    r = _settings(cfg, task, as_size(cfg.size) or (prior.size if prior else None))
    check_bn_batch(task, r["batch_size"], env.world, cfg.freeze_bn)
    train_set, val_set = _datasets(cfg, task, r, prior, images)
    info = DetectorInfo(spec, task.name, train_set.num_classes, r["size"],
                        train_set.categories())
    model = _model(cfg, task, info, ckpt, prior, say)
    per_epoch = len(train_set) // r["batch_size"]
    tc = _train_config(cfg, r, state_path, r["epochs"] * per_epoch)
    identity = {"task": task.name, "size": list(r["size"]), "augment": r["augment"],
                "categories": [c["id"] for c in info.categories],
                "train_images": len(train_set)}
    say(f"finetune {task.name} {r['size'][0]}x{r['size'][1]}: {len(train_set)} images, "
        f"{info.num_classes} classes, {tc.epochs} epochs x {per_epoch} steps, batch "
        f"{tc.batch_size} ({env.world} process{'es' if env.world > 1 else ''}, "
        f"{env.device.type}), {tc.optimizer} lr {tc.lr:.4g} {tc.schedule}, warm-up "
        f"{tc.warmup_iters}, augment {r['augment']}")
    if env.distributed and env.device.type == "cpu" and not tc.freeze_bn:
        say("note: SyncBatchNorm needs GPUs; on CPU each process keeps its own BN batch "
            "statistics (--freeze-bn avoids the difference)")

    evaluated: dict[str, Any] = {}  # the last evaluation, for the result

    def on_epoch_end(epoch: int, net: torch.nn.Module) -> dict | None:
        last = epoch + 1 == tc.epochs
        if not (val_set and env.is_main and ((epoch + 1) % cfg.eval_every == 0 or last)):
            return None
        res = task.evaluate(net, val_set, batch_size=max(1, tc.batch_size // env.world),
                            workers=cfg.workers, device=env.device)
        evaluated.update(epoch=epoch + 1, stats={k: res.stats[k] for k in task.epoch_metrics})
        return evaluated["stats"]

    result = fit(model, train_set, task.loss, tc, env, state_path=state_path,
                 metrics_path=metrics_path, resume=cfg.resume, collate_fn=task.collate,
                 identity=identity, on_epoch_end=on_epoch_end, stop_after=cfg.stop_after,
                 desc=f"finetune {task.name}")
    out = FinetuneResult(str(output), task.name, result.steps, result.epochs, result.finished,
                         result.last_loss, metrics=evaluated.get("stats"),
                         metrics_epoch=evaluated.get("epoch"))
    if not result.finished:
        say(f"stopped after {result.steps} steps; training state in {state_path} (continue "
            "with --resume)")
        return out
    if cfg.bn_recalibrate:
        out.bn_recalibrated_batches = _recalibrate(model, train_set, task, tc, cfg, env)
        say(f"BN statistics recalibrated on {out.bn_recalibrated_batches} training batches")
    if env.is_main:
        _save(cfg, task, info, model, tc, r, result.steps, output)
    loss = f"{result.last_loss:.4f}" if result.last_loss is not None else "-"
    say(f"{model_kind(task.name)}: {result.steps} steps, last loss {loss} -> {output}")
    barrier(env)
    return out


def _datasets(cfg: FinetuneConfig, task: Any, r: dict, prior: Any, images: Any = None
              ) -> tuple[Any, Any]:
    """(training set, validation set or None), validated completely before any training;
    their categories agree with each other and with a continued model's. ``images``: the
    training set is these images of the split (already loaded), with the run's
    augmentation."""
    transform = task.train_transform(r["augment"], r["size"])
    if images is not None:
        from fnacli.search.fitness_data import view

        train_files = images.files
        train_set = view(images, images.ids, train=True, transform=transform)
    else:
        train_files = task.find_split(cfg.data, "train", cfg.train_ann, cfg.train_images)
        train_set = task.load_split(train_files, train=True, transform=transform,
                                    seed=cfg.seed)
    val_set = None
    if cfg.eval_every:
        val_files = task.find_split(cfg.data, "val", cfg.val_ann, cfg.val_images)
        val_set = task.load_split(val_files, train=False, transform=task.eval_transform())
        task.check_categories(train_set.categories(), val_set.categories(),
                              str(train_files.ann), str(val_files.ann))
    if prior:
        task.check_categories(prior.categories, train_set.categories(), str(cfg.target),
                              str(train_files.ann))
    return train_set, val_set


def _model(cfg: FinetuneConfig, task: Any, info: Any, ckpt: Any, prior: Any,
           say: Reporter) -> Any:
    """The task's model: a saved model continued, or a fresh one (seeded) around the
    backbone's tensors."""
    import torch

    from fnacli.model_checkpoint import build, load_backbone_into, load_state_strict

    torch.manual_seed(cfg.seed)  # fresh layers are a function of the seed
    model = build(info)
    if prior:
        load_state_strict(model, ckpt.tensors, cfg.target)
    else:
        dropped = load_backbone_into(model, ckpt.tensors, cfg.target, task.backbone_of(model))
        if dropped:
            say(f"{cfg.target}: {dropped} head-conv tensors not used by {task.name}")
    return model


def _train_config(cfg: FinetuneConfig, r: dict, state_path: Path, total: int) -> Any:
    """The loop's settings; warm-up given, else the resumed run's own, else min(500, 10%)."""
    from fnacli.progress import tensorboard_dir
    from fnacli.train import TrainConfig

    warmup = (cfg.warmup_iters if cfg.warmup_iters is not None else
              _resumed_warmup(state_path) if cfg.resume else min(500, total // 10))
    return TrainConfig(
        epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], optimizer=r["optimizer"],
        momentum=cfg.momentum, weight_decay=r["weight_decay"], schedule=r["schedule"],
        milestones=r["milestones"], warmup_iters=warmup, clip_grad=r["clip_grad"],
        seed=cfg.seed, workers=cfg.workers, freeze_bn=cfg.freeze_bn,
        checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
        tensorboard=tensorboard_dir(cfg.tensorboard))


def _save(cfg: FinetuneConfig, task: Any, info: Any, model: Any, tc: Any, r: dict, steps: int,
          output: Path) -> None:
    """The fine-tuned model with what rebuilds and evaluates it (recipe, inference mode)."""
    from fnacli.model_checkpoint import save_detector

    info.extra = {"finetune": {"epochs": tc.epochs, "steps": steps,
                               "batch_size": tc.batch_size, "lr": tc.lr,
                               "optimizer": tc.optimizer, "schedule": tc.schedule,
                               "augment": r["augment"], "seed": tc.seed,
                               "bn_recalibrate": cfg.bn_recalibrate}}
    inference = task.inference_meta(r["size"])
    if cfg.inference is not None:
        inference = {**inference, "mode": cfg.inference}
    if inference:
        info.extra["inference"] = inference
    save_detector(output, model.cpu(), info, force=True)


def _resumed_warmup(state_path: Path) -> int:
    """The warm-up a resumed run keeps: the saved run's (its default depends on the number of
    steps, which an extended run, --epochs raised, changes)."""
    from fnacli.train import load_train_state

    return int(load_train_state(state_path)["identity"]["warmup_iters"])


def _recalibrate(model: Any, train_set: Any, task: Any, tc: Any, cfg: FinetuneConfig,
                 env: Any) -> int:
    """BN statistics recomputed on ``cfg.bn_recalibrate`` training batches. Every process
    runs the same batches: with SyncBatchNorm all of them must take part, and the
    statistics come out identical everywhere."""
    import itertools

    import torch
    from torch.utils.data import DataLoader

    from fnacli.train import recalibrate_bn

    plain = train_set.subset(range(len(train_set)))  # a view: no second validation
    plain.transform = task.eval_transform()
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(plain, batch_size=max(1, tc.batch_size // env.world), shuffle=True,
                        generator=g, collate_fn=task.collate, num_workers=cfg.workers)
    batches = itertools.islice(loader, cfg.bn_recalibrate)
    return recalibrate_bn(model, batches, lambda m, b: task.stats_forward(m, b, env.device))
