"""What both search strategies share: :class:`SearchOptions` (data, recipe and run options;
settings left at None come from the task), :class:`SearchResult`, and the helpers the steps
use (the weight recipe, the training set, input size, latency options, cost input size).
The step :func:`fnacli.pipeline.search.search` and the strategies' modules import this one."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import AUGMENTS, TENSORBOARD, WEIGHT_DECAY, Size, TrainOptions, as_size
from fnacli.report import Report
from fnacli.settings import DATA, RUN, SCHEDULE, number_text, setting
from fnacli.tasks import per_task, size_text

STRATEGIES = ("differentiable", "evolution", "random")
ARCH, ONESHOT = "Architecture (differentiable)", "One-shot (evolution, random)"  # groups
_search = functools.partial(setting, kw_only=True)  # a training option, restated for a search
_arch = functools.partial(setting, group=ARCH)


def _weights(task: Any) -> Any:
    """The weight-step recipe of ``task``'s differentiable search."""
    return task.search_defaults.weight_recipe(task.recipe)


_SEARCH_WD = per_task(lambda t: number_text(_weights(t).weight_decay))


def default_size(task: Any) -> tuple[int, int]:
    """The input size of both searches when ``--size`` is not given: the task's search recipe
    (DeepLab: FNA's 321x321 crops), else its fine-tuning size."""
    return task.search_defaults.size or task.recipe.size


@dataclass
class SearchOptions(TrainOptions):
    """What both strategies share (and :class:`TrainOptions`)."""

    supernet: str | Path = setting(help="Supernet checkpoint from 'fnacli expand' (or, with "
                                   "--skip-training, one trained one-shot).", metavar="SUPERNET")
    output: str | Path = setting(help="Output searched checkpoint (.safetensors); SEARCHED.ckpt "
                                 "and SEARCHED.metrics.jsonl go beside it.", metavar="SEARCHED")
    # from fnacli latency (``force``: any machine)
    latency_table: str | Path | None = setting(None, "Latency table from 'fnacli latency' (same "
                                               "space, task, size): for --cost latency / "
                                               "--max-latency, and reported beside MAdds.")
    # fnacli.lut.COST_SCOPES; None: differentiable ``blocks``, one-shot ``backbone``
    cost_scope: str | None = _arch(None, "What the MAdds cost counts: the searched blocks, the "
                                   "whole backbone or the whole detector [differentiable: blocks "
                                   "(the cost term, as FNA/Jung et al.); evolution/random: "
                                   "backbone (--max-madds, as DetNAS)].",
                                   metavar="blocks|backbone|detector")
    # None: the task's ``search_defaults.cost_size``, else the input size
    cost_size: Size | None = _arch(None, "Input size MAdds are counted at [retinanet 1088x800 as "
                                   "FNA/Jung et al. report it, ssdlite --size].", metavar="N|WxH")
    task: str | None = _search(None, "Detector to search for [from the trained supernet with "
                               "--skip-training].")
    val_ann: str | Path | None = _search(None, "Reporting split (what 'fnacli eval' reports on): "
                                         "one-shot fitness images may not be in it.")
    val_images: str | Path | None = _search(None, "Reporting split's images.")
    size: Size | None = _search(None, "Input size "
                                f"[{per_task(lambda t: size_text(default_size(t)))}; with "
                                "--skip-training the size trained at].")
    epochs: int | None = _search(None, "Epochs [differentiable: "
                                 f"{per_task('search_defaults.epochs')}; one-shot supernet "
                                 f"training: {per_task('oneshot_epochs')}].", min=1,
                                 group=SCHEDULE)
    batch_size: int | None = _search(None, "Global training batch "
                                     f"[{per_task('recipe.batch_size')}].", min=1, group=SCHEDULE)
    lr: float | None = _search(None, "Base lr of the weight steps [differentiable: {} images; "
                               "one-shot: the finetune recipe's], scaled to --batch-size.".format(
                                   per_task(lambda t: f"{number_text(_weights(t).lr)} per "
                                                      f"{_weights(t).base_batch}")),
                               min=0.0, group=SCHEDULE)
    weight_decay: float | None = _search(None, f"[differentiable: {_SEARCH_WD}; one-shot: "
                                         f"{WEIGHT_DECAY}]", min=0.0, group=SCHEDULE)
    warmup_iters: int | None = _search(None, "Linear warm-up [min(500, 10% of the steps)].",
                                       min=0, group=SCHEDULE)
    clip_grad: float | None = _search(None, "Max gradient norm [retinanet 35]; 0 = off.",
                                      min=0.0, group=SCHEDULE)
    augment: str | None = _search(None, "Training augmentation [differentiable: {} (no flip "
                                  "during a detection search, as FNA); one-shot supernet "
                                  "training: {} (the fine-tuning's, as DetNAS)].".format(
                                      per_task(lambda t: t.search_defaults.augment
                                               or t.default_augment),
                                      per_task("default_augment")),
                                  metavar="|".join(AUGMENTS), group=DATA)
    seed: int = _search(0, "Seed of paths, data order, populations.")
    tensorboard: str | Path | None = _search(None, "Also log losses, lr, the cost term, MAdds and "
                                             "α/β (one-shot: each generation's fitness) to "
                                             "TensorBoard event files in DIR.", **TENSORBOARD)
    stop_after: int | None = _search(None, "Stop training (checkpointed) after STEPS steps of "
                                     "this run; continue with --resume.", min=1,
                                     metavar="STEPS", group=RUN)
    resume: bool = _search(False, "Continue the training and the search where they stopped.")
    force: bool = _search(False, "Overwrite outputs and start over (and accept a "
                          "--latency-table measured on another machine).")


DIFFERENTIABLE_COST_SCOPE = "blocks"  # Jung et al.'s eq. 5, FNA's searched backbone
ONESHOT_COST_SCOPE = "backbone"  # DetNAS constrains the backbone's FLOPs

# Every file of a one-shot search, in one place (docs/evolution.md describes them).
FILE_ROLES = {"output": "result", "trained": "trained supernet",
              "train_state": "training state (--resume)", "train_metrics": "training metrics",
              "state": "search state (--resume)", "history": "candidates and generations",
              "confirm": "confirmation table", "confirm_runs": "confirmation runs"}


@dataclass
class SearchResult:
    """A search's outcome; ``message`` is its one-line summary."""

    strategy: str
    finished: bool
    message: str
    output: str | None = None
    details: dict = field(default_factory=dict)
    is_main: bool = True  # False in the other processes of a distributed run
    files: dict[str, str] = field(default_factory=dict)  # role (FILE_ROLES) -> path

    def to_dict(self) -> dict:
        d = dict(self.details)
        d.update({"strategy": self.strategy, "finished": self.finished, "output": self.output})
        d.setdefault("message", self.message)
        if self.files:
            d["files"] = dict(self.files)
        return d

    def report(self) -> Report:
        """The one-line summary, (one-shot) the confirmation's table and the files the search
        left, by role."""
        report: Report = [self.message]
        if "confirm" in self.details:
            from fnacli.pipeline.confirm import confirm_table

            report.append(confirm_table(self.details["confirm"]))
        if self.files:
            report.append("files: " + ", ".join(f"{FILE_ROLES[k]} {p}"
                                                for k, p in self.files.items()))
        return report


# -- what the steps share ---------------------------------------------------------------------


def madds_window(o: Any, seed: Any, cost: Any) -> tuple[float | None, float | None]:
    """``min_madds``/``max_madds`` as absolute MAdds: given (300M), or a share of the seed's
    MAdds over the same scope and size (60%; ``seed``: the supernet's seed spec, ``cost``:
    an architecture's MAdds)."""
    from fnacli.budget import Budget

    budget = Budget.of(min_madds=o.min_madds, max_madds=o.max_madds)
    reference = None
    if budget.relative:
        if seed is None:
            raise UserError("max_madds: a relative budget is taken of the seed's MAdds, and "
                            "this supernet records no seed; give MAdds",
                            "--max-madds/--min-madds: a relative budget is taken of the "
                            "seed's MAdds, and this supernet records no seed; give MAdds")
        reference = {"madds": cost(seed)}
    return budget.resolve(reference).bounds.get("madds", (None, None))


def train_config(o: SearchOptions, task: Any, epochs: int, steps: int, schedule: str,
                  milestones: tuple[float, ...], warmup_cap: int, recipe: Any = None) -> Any:
    """The weight-side recipe: given options, else ``recipe`` (the task's fine-tuning recipe
    by default)."""
    from fnacli.progress import tensorboard_dir
    from fnacli.train import TrainConfig

    r = recipe or task.recipe
    batch = o.batch_size or r.batch_size
    clip = o.clip_grad if o.clip_grad is not None else r.clip_grad
    return TrainConfig(
        epochs=epochs, batch_size=batch, lr=o.lr if o.lr is not None else r.lr_for(batch),
        optimizer=o.optimizer or r.optimizer, momentum=o.momentum,
        weight_decay=o.weight_decay if o.weight_decay is not None else r.weight_decay,
        schedule=schedule, milestones=milestones,
        warmup_iters=(o.warmup_iters if o.warmup_iters is not None
                      else min(warmup_cap, steps // 10)),
        clip_grad=clip or None, seed=o.seed, workers=o.workers,
        checkpoint_every=o.checkpoint_every, log_every=o.log_every,
        tensorboard=tensorboard_dir(o.tensorboard))


def train_set(o: SearchOptions, task: Any, augment: str, size: tuple[int, int]) -> Any:
    """The training split, transformed for training at ``size``."""
    files = task.find_split(o.data, "train", o.train_ann, o.train_images)
    return task.load_split(files, train=True, transform=task.train_transform(augment, size),
                           seed=o.seed)


def search_input(o: SearchOptions, task: Any) -> tuple[tuple[int, int], str]:
    """(input size, augmentation) of a differentiable search: given, else the task's search
    recipe, else its fine-tuning recipe."""
    return (as_size(o.size) or default_size(task),
            o.augment or task.search_defaults.augment or task.default_augment)


def check_latency(o: Any) -> None:
    """The latency options, refused before any work."""
    from fnacli.cost.latency import parse_latency, read_latency_table

    cost = getattr(o, "cost", "madds")
    if cost not in ("madds", "latency"):
        raise UserError(f"--cost: expected madds or latency, got {cost!r}")
    target = getattr(o, "target_latency", None)
    if target is not None:
        parse_latency(target, "--target-latency")
        if cost != "latency":
            raise UserError("--target-latency goes with --cost latency")
    if getattr(o, "target_madds", None) is not None and cost != "madds":
        raise UserError("--target-madds goes with --cost madds (use --target-latency)")
    limit = getattr(o, "max_latency", None)
    if limit is not None:
        parse_latency(limit, "--max-latency")
    if (cost == "latency" or limit is not None) and not o.latency_table:
        what = "--cost latency" if cost == "latency" else "--max-latency"
        raise UserError(f"{what} needs --latency-table TABLE (measure one with 'fnacli "
                        "latency')")
    if o.latency_table:
        read_latency_table(o.latency_table, _task_of, o.force)


def _task_of(name: str) -> Any:
    """A task name a latency table records, as the cost package takes it."""
    from fnacli.cost.target import PLAIN
    from fnacli.tasks import lookup

    return lookup(name, PLAIN)


def latency_table(o: Any, space: Any, task: str, size: tuple[int, int], classes: int) -> Any:
    """The ``--latency-table`` checked against the search's space, task and size, or None."""
    from fnacli.cost.latency import search_latency_table
    from fnacli.tasks import get_task

    if not o.latency_table:
        return None
    return search_latency_table(o.latency_table, space, get_task(task), size, classes, _task_of,
                                o.force)


def cost_input_size(o: SearchOptions, task: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The input size MAdds are counted at: given, else the task's for ``size``."""
    from fnacli.search.differentiable import default_cost_size

    return as_size(o.cost_size, "--cost-size") or default_cost_size(task.name, size)
