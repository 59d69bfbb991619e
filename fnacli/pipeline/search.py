"""Architecture search on a task: FNA's differentiable search or DetNAS's one-shot search.

This module holds what both strategies share (:class:`SearchOptions`, :class:`SearchResult`,
the dispatch :func:`search`); each strategy is a step of its own module:

- :func:`search_differentiable` (:class:`DifferentiableSearchConfig`,
  ``pipeline/search_differentiable.py``): alternating weight / α-β optimisation with a MAdds
  cost (``fnacli.search.differentiable``). Files beside OUTPUT: OUTPUT.ckpt (state for
  ``resume``), OUTPUT.metrics.jsonl, OUTPUT.arch.svg; OUTPUT itself is rewritten after every
  epoch.
- :func:`search_oneshot` (:class:`OneShotSearchConfig`, ``pipeline/search_oneshot.py``,
  strategy ``evolution`` or ``random``): train the supernet one uniform path at a time (to
  ``trained``, default OUTPUT with ``.oneshot.safetensors``, with TRAINED.ckpt /
  TRAINED.metrics.jsonl), then search it (OUTPUT.search.json state, OUTPUT.history.jsonl);
  see docs/evolution.md. The fitness hold-out is ``pipeline/fitness.py``, DetNAS's random
  baseline (``retrain``) ``pipeline/search_random.py``.

Both take the same data, recipe and run options (:class:`SearchOptions`); settings left at
None come from the task (``Task.recipe``, ``Task.search_defaults``, ``Task.oneshot_epochs``).
"""

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
                                f"[{per_task(lambda t: size_text(t.recipe.size))}; with "
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
                                  "during a RetinaNet search, as FNA); one-shot: {}].".format(
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
              "state": "search state (--resume)", "history": "candidates and generations"}


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
        """The one-line summary and (one-shot) the files the search left, by role."""
        report: Report = [self.message]
        if self.files:
            report.append("files: " + ", ".join(f"{FILE_ROLES[k]} {p}"
                                                for k, p in self.files.items()))
        return report


def search(*args: Any, strategy: str | None = None, **kwargs: Any) -> SearchResult:
    """Search ``supernet`` on a task with either strategy: FNA's differentiable search
    (``strategy="differentiable"``, the default; ``search_differentiable``) or DetNAS's
    one-shot search (``"evolution"`` or ``"random"``; ``search_oneshot``). Takes a
    ``DifferentiableSearchConfig`` or ``OneShotSearchConfig`` (plus fields to replace), or
    the fields with ``strategy=``; a field of the other strategy is refused."""
    from fnacli.pipeline.search_differentiable import (
        DifferentiableSearchConfig,
        search_differentiable,
    )
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig, search_oneshot

    if args and isinstance(args[0], DifferentiableSearchConfig):
        return search_differentiable(*args, **kwargs)
    if args and isinstance(args[0], OneShotSearchConfig):
        return search_oneshot(*args, **kwargs)
    strategy = strategy or "differentiable"
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy: expected one of {', '.join(STRATEGIES)}, got "
                        f"{strategy!r}")
    if strategy == "differentiable":
        return search_differentiable(*args, **kwargs)
    return search_oneshot(*args, strategy=strategy, **kwargs)


def document_search() -> None:
    """Give :func:`search` the signature and parameter list of both strategies' configs
    (``help(fnacli.search)``): the shared fields, then each strategy's own. Called once both
    step modules are imported (``fnacli.search`` does; they import this module)."""
    import inspect

    from fnacli.pipeline.common import signature_of
    from fnacli.pipeline.search_differentiable import (
        DifferentiableSearchConfig,
        search_differentiable,
    )
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig, search_oneshot

    if getattr(search, "__signature__", None) is not None:
        return
    diff = signature_of(DifferentiableSearchConfig, search_differentiable).parameters
    one = signature_of(OneShotSearchConfig, search_oneshot).parameters
    strategy = inspect.Parameter("strategy", inspect.Parameter.KEYWORD_ONLY,
                                 default="differentiable", annotation=one["strategy"].annotation)
    params = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if n in ("supernet",
              "output") else p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for n, p in {**diff, **one}.items() if n != "strategy"]
    params.sort(key=lambda p: p.kind == inspect.Parameter.KEYWORD_ONLY)
    params.insert(2, strategy)
    search.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=inspect.signature(search_differentiable).return_annotation)
    shared = [n for n in diff if n in one]

    def section(title: str, doc: str, names: list[str]) -> str:
        entries = doc.split("----------\n", 1)[1].split("\n")
        keep, on = [], False
        for line in entries:
            if not line.startswith(" "):
                on = line.split(" : ")[0] in names
            if on:
                keep.append(line)
        return f"{title}\n{'-' * len(title)}\n" + "\n".join(keep)

    search.__doc__ = "\n\n".join([
        inspect.cleandoc(search.__doc__ or ""),
        "strategy : str = 'differentiable'\n    differentiable, evolution or random.",
        section("Parameters (both strategies)", search_differentiable.__doc__ or "", shared),
        section("Differentiable only", search_differentiable.__doc__ or "",
                [n for n in diff if n not in one]),
        section("One-shot only (evolution, random)", search_oneshot.__doc__ or "",
                [n for n in one if n not in diff and n != "strategy"])])


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
    """(input size, augmentation) of a search: given, else the task's search recipe, else its
    fine-tuning recipe."""
    d = task.search_defaults
    return (as_size(o.size) or d.size or task.recipe.size,
            o.augment or d.augment or task.default_augment)


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
        read_latency_table(o.latency_table, o.force)


def latency_table(o: Any, space: Any, task: str, size: tuple[int, int], classes: int) -> Any:
    """The ``--latency-table`` checked against the search's space, task and size, or None."""
    from fnacli.cost.latency import search_latency_table

    if not o.latency_table:
        return None
    return search_latency_table(o.latency_table, space, task, size, classes, o.force)


def cost_input_size(o: SearchOptions, task: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The input size MAdds are counted at: given, else the task's for ``size``."""
    from fnacli.search.differentiable import default_cost_size

    return as_size(o.cost_size, "--cost-size") or default_cost_size(task.name, size)
