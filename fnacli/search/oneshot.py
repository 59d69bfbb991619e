"""The one-shot supernet of DetNAS: trained with uniform single-path sampling, then used to
score candidate paths (BN recalibration + COCO mAP) for evolutionary or random search.

Training: every step draws one path, every op candidate of every searchable layer and every
channel candidate equally likely (no α/β), and trains the detector built around the
supernet on it with ``fnacli.train.fit`` (optimiser, schedule, torchrun/DDP, checkpoints and
exact ``--resume``). The path of step ``k`` is a function of (seed, k) alone, so a resumed
run draws the same paths as an uninterrupted one.

The trained supernet is a ``supernet`` checkpoint like the one ``fnacli expand`` writes (same
tensors, α/β untouched, so any search can read it) plus the detector's neck and head under
``detector.`` and, in metadata, ``oneshot``: task, size, classes and how it was trained.
Several searches reuse it (``--skip-training``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from fnacli.checkpoint import save_checkpoint
from fnacli.detection.data import CocoDetection
from fnacli.detection.evaluate import evaluate
from fnacli.errors import UserError
from fnacli.nn.supernet import Supernet
from fnacli.search import arch as A
from fnacli.search.bn_recal import (
    DecodedDataset,
    calibration_batches,
    decoded_bytes,
    outside_batchnorms,
    recalibrate_path,
)
from fnacli.search.evolution import Encoding, Genome
from fnacli.search.supernet_io import SupernetCheckpoint, load_weights, read_supernet
from fnacli.tasks import get_task
from fnacli.train import DistEnv, FitResult, TrainConfig, fit, load_train_state

META_KEY = "oneshot"
CACHE_BYTES = 2 << 30  # decoded calibration + fitness images kept in memory, at most
DETECTOR_PREFIX = "detector."


@dataclass(frozen=True)
class OneshotInfo:
    """What a trained one-shot supernet was trained for (metadata ``oneshot``)."""

    task: str
    num_classes: int
    size: tuple[int, int]  # (width, height)
    categories: list[dict]
    trained: dict  # recipe, steps, source

    def to_dict(self) -> dict:
        return {"task": self.task, "num_classes": self.num_classes, "size": list(self.size),
                "categories": self.categories, "trained": self.trained}

    @classmethod
    def from_meta(cls, meta: dict, source: str) -> OneshotInfo | None:
        d = meta.get(META_KEY)
        if d is None:
            return None
        try:
            return cls(str(d["task"]), int(d["num_classes"]), (int(d["size"][0]),
                                                               int(d["size"][1])),
                       list(d["categories"]), dict(d.get("trained", {})))
        except (KeyError, TypeError, ValueError, IndexError):
            raise UserError(f"{source}: metadata '{META_KEY}' is damaged (expected task, "
                            "num_classes, size, categories)") from None


def build_oneshot_detector(ckpt: SupernetCheckpoint, task: str, num_classes: int,
                           size: tuple[int, int], source: str, seed: int = 0
                           ) -> tuple[nn.Module, Supernet]:
    """The detector around the checkpoint's supernet, its weights loaded. The detector's own
    layers come from the checkpoint when it was trained one-shot for the same task and
    classes, else they start fresh (seeded)."""
    torch.manual_seed(seed)  # fresh neck/head layers are a function of the seed
    t = get_task(task, "task")
    supernet = Supernet(ckpt.space, ckpt.masks, with_head=t.uses_head_conv,
                        output_stride=t.output_stride, mask_scope=ckpt.mask_scope)
    load_weights(supernet, ckpt.weights, source)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    detector = t.build_model(ckpt.space.max_arch(), num_classes, size, backbone=supernet)
    body = body_prefix(detector, supernet)
    info = OneshotInfo.from_meta(ckpt.meta, source)
    if info is not None and info.task == task and info.num_classes == num_classes:
        own = {k: v for k, v in detector.state_dict().items() if not k.startswith(body)}
        saved = {k[len(DETECTOR_PREFIX):]: v for k, v in ckpt.weights.items()
                 if k.startswith(DETECTOR_PREFIX)}
        if set(saved) != set(own):
            raise UserError(f"{source}: its detector tensors do not match a {task} detector "
                            f"of its space")
        detector.load_state_dict({**saved, **{body + k: v for k, v in
                                              supernet.state_dict().items()}})
    return detector, supernet


def body_prefix(model: nn.Module, body: nn.Module) -> str:
    """Where ``body`` (the supernet) sits in ``model``'s state dict (``backbone.body.`` in the
    detectors)."""
    return next(n for n, m in model.named_modules() if m is body) + "."


def uniform_path(space_encoding: Encoding, seed: int, step: int) -> Genome:
    """The path of training step ``step``: every candidate equally likely, seeded by
    (seed, step) only."""
    path = A.sample_path(space_encoding.space, None, None, A.step_generator(seed, step))
    return space_encoding.encode(path)


def train_oneshot(ckpt: SupernetCheckpoint, source: str, dataset: CocoDetection, task: str,
                  size: tuple[int, int], cfg: TrainConfig, env: DistEnv, output: str | Path,
                  *, state_path: str | Path, metrics_path: str | Path | None,
                  resume: bool = False, stop_after: int | None = None, force: bool = False,
                  fitness: dict | None = None, augment: str | None = None,
                  log: Callable[[str], None] | None = None) -> FitResult:
    """Train the supernet of ``ckpt`` one path at a time and write the trained supernet to
    ``output`` (when training finished; rank 0). ``fitness`` (what was held out of
    ``dataset`` for scoring, ``fnacli.search.fitness_data``) and ``augment`` (the training
    augmentation's name) are recorded in its metadata."""
    num_classes = dataset.num_classes
    t = get_task(task, "task")
    cfg = replace(cfg, find_unused_parameters=True)
    detector, supernet = build_oneshot_detector(ckpt, task, num_classes, size, source, cfg.seed)
    info = OneshotInfo.from_meta(ckpt.meta, source)
    if info is not None:
        t.check_categories(info.categories, dataset.categories(), source,
                           str(dataset.files.ann))
    enc = Encoding(ckpt.space)
    step = [load_train_state(state_path)["step"] if resume else 0]

    def loss_fn(model: nn.Module, batch: tuple, device: torch.device) -> dict:
        supernet.set_path(enc.path(uniform_path(enc, cfg.seed, step[0])))
        step[0] += 1
        return t.loss(model, batch, device)

    identity = {"strategy": "oneshot", "task": task, "size": list(size),
                "num_classes": num_classes, "supernet": Path(source).name,
                "train_images": len(dataset)}
    result = fit(detector, dataset, loss_fn, cfg, env, state_path=state_path,
                 metrics_path=metrics_path, resume=resume, collate_fn=t.collate,
                 identity=identity, stop_after=stop_after, desc="one-shot supernet", log=log)
    if result.finished and env.is_main:
        trained = {"epochs": cfg.epochs, "steps": result.steps, "batch_size": cfg.batch_size,
                   "lr": cfg.lr, "optimizer": cfg.optimizer, "seed": cfg.seed,
                   "sampling": "uniform single path", "source": Path(source).name,
                   "train_images": len(dataset)}
        if augment is not None:
            trained["augment"] = augment
        if fitness is not None:
            trained["fitness"] = fitness
        info = OneshotInfo(task, num_classes, size, dataset.categories(), trained)
        save_trained(output, ckpt, detector, supernet, info, force=force)
    return result


def save_trained(path: str | Path, ckpt: SupernetCheckpoint, detector: nn.Module,
                 supernet: Supernet, info: OneshotInfo, force: bool = False) -> None:
    """The trained supernet: the input's tensors with the supernet's trained weights, the
    detector's own layers under ``detector.``, and ``oneshot`` in metadata."""
    body = body_prefix(detector, supernet)
    tensors = {k: v for k, v in ckpt.weights.items() if not k.startswith(DETECTOR_PREFIX)}
    tensors.update({k: v.detach().cpu() for k, v in supernet.state_dict().items()})
    tensors.update({DETECTOR_PREFIX + k: v.detach().cpu()
                    for k, v in detector.state_dict().items() if not k.startswith(body)})
    tensors.update(A.to_tensors(ckpt.alpha, ckpt.beta))
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("search", META_KEY)}
    meta[META_KEY] = info.to_dict()
    save_checkpoint(path, tensors, "supernet", meta, force=force)


def load_trained(path: str | Path) -> tuple[SupernetCheckpoint, OneshotInfo]:
    """A supernet trained one-shot (``--skip-training`` input); UserError otherwise."""
    ckpt = read_supernet(path)
    info = OneshotInfo.from_meta(ckpt.meta, str(path))
    if info is None:
        raise UserError(f"{path}: this supernet was not trained with one-shot sampling (no "
                        f"'{META_KEY}' metadata); drop --skip-training to train it first")
    return ckpt, info


class PathEvaluator:
    """Scores a genome: select its path, recalibrate BN on the fixed calibration subset,
    then the task's evaluation on the held-out split (``task`` None: COCO bbox). Returns the
    task's metric numbers (COCOeval's 12).

    ``calib`` may be several calibration subsets (``search --calib-draws``): the path is then
    recalibrated and evaluated once per subset, and every number is the mean over them; for
    ``metric`` the per-draw values (``METRIC@draw0``, …) and their sample standard deviation
    (``METRIC@std``) are added. One subset scores exactly as before there were several.

    With ``cache_images`` (default) the subsets are decoded once, when they fit in
    ``cache_bytes`` together (decoded uint8 size; an image several calibration subsets share
    counted and held once); otherwise they are read for every candidate. The fitness is the
    same either way."""

    def __init__(self, detector: nn.Module, supernet: Supernet, encoding: Encoding,
                 calib: CocoDetection | Sequence[CocoDetection], val: CocoDetection,
                 batch_size: int, workers: int = 0, device: torch.device | str = "cpu",
                 task: str | None = None, cache_images: bool = True,
                 cache_bytes: int = CACHE_BYTES, metric: str | None = None) -> None:
        self.detector = detector.to(device).eval()
        self.supernet = supernet
        self.encoding = encoding
        self.evaluate = get_task(task, "task").evaluate if task else evaluate
        self.outside = outside_batchnorms(self.detector, supernet)
        draws = list(calib) if isinstance(calib, list | tuple) else [calib]
        if not draws:
            raise UserError("BN recalibration got no calibration subset")
        self.metric = metric
        self.cached = (cache_images
                       and decoded_bytes(*draws) + decoded_bytes(val) <= cache_bytes)
        if self.cached:
            shared: dict | None = {} if len(draws) > 1 else None
            draws = [DecodedDataset(d, workers, shared) for d in draws]
            val = DecodedDataset(val, workers)
            workers = 0  # in memory: worker processes would only add start-up time
        self.draws = [calibration_batches(d, batch_size, workers) for d in draws]
        self.batches = self.draws[0]
        self.val = val
        self.batch_size, self.workers, self.device = batch_size, workers, device

    def __call__(self, genome: Genome) -> dict[str, float]:
        path = self.encoding.path(genome)
        per_draw = []
        for batches in self.draws:
            recalibrate_path(self.detector, self.supernet, path, batches, self.device,
                             self.outside)
            per_draw.append(self.evaluate(self.detector, self.val, batch_size=self.batch_size,
                                          workers=self.workers, device=self.device).stats)
        if len(per_draw) == 1:
            return per_draw[0]
        return mean_stats(per_draw, self.metric)


def mean_stats(per_draw: Sequence[dict[str, float]], metric: str | None = None
               ) -> dict[str, float]:
    """Every number's mean over the calibration draws; for ``metric`` (when given and
    present) also each draw's value (``METRIC@drawR``) and their sample standard deviation
    (``METRIC@std``)."""
    import statistics

    out = {k: statistics.fmean(float(d[k]) for d in per_draw) for k in per_draw[0]}
    if metric is not None and metric in out:
        values = [float(d[metric]) for d in per_draw]
        out.update({f"{metric}@draw{r}": v for r, v in enumerate(values)})
        out[f"{metric}@std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def distributed_evaluate(score: Callable[[Genome], dict[str, float]], env: DistEnv
                         ) -> Callable[[Sequence[Genome]], list[dict[str, float]]]:
    """``evaluate`` for ``OneShotSearch`` with ``chunk = env.world``: process r scores the
    r-th genome of each chunk and every process receives every result."""

    def run(genomes: Sequence[Genome]) -> list[dict[str, float]]:
        mine = score(genomes[env.rank]) if env.rank < len(genomes) else None
        if not env.distributed:
            return [mine] if mine is not None else []
        import torch.distributed as dist

        gathered: list = [None] * env.world
        dist.all_gather_object(gathered, mine)
        return gathered[:len(genomes)]

    return run
