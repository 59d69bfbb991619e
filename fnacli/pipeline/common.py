"""What the pipeline steps share: building a config from arguments, messages, input sizes,
the files a resumable run leaves beside its output, and the distributed environment."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fnacli.errors import UserError
from fnacli.settings import (
    DEVICE,
    MAX_SIDE,
    MAX_THREADS,
    ON_MESSAGE,
    RUN,
    SCHEDULE,
    check,
    flag_of,
    number_text,
    setting,
)
from fnacli.tasks import per_task, size_text, tasks

if TYPE_CHECKING:
    from fnacli.train import DistEnv

log = logging.getLogger("fnacli")
C = TypeVar("C")
R = TypeVar("R")
Size = int | tuple[int, int] | str
Message = Callable[[str], None]


# every task's augmentation policy names (a task refuses the others)
AUGMENTS = tuple(dict.fromkeys(a for t in tasks() for a in t.augments))
WEIGHT_DECAY = per_task(lambda t: number_text(t.recipe.weight_decay))
TENSORBOARD = {"metavar": "DIR", "envvar": "FNACLI_TENSORBOARD", "show_envvar": True,
               "group": RUN}


THREADS_HELP = ("CPU threads per process for torch ops [0: the cores left by --workers, "
                "shared by the processes of a run, at least 1]; 1 avoids oversubscription on a "
                "busy machine.")


@dataclass(kw_only=True)
class TrainOptions:
    """What every training step takes (fine-tuning, both searches): the task, the data, the
    weight-side recipe (None: the task's ``recipe``) and how to run. The meanings given are
    fine-tuning's; a search's config restates the ones that differ."""

    task: str | None = setting(None, "Detector (required for a backbone TARGET).")
    data: str | Path | None = setting(None, api="COCO-layout dataset folder.")
    train_ann: str | Path | None = setting(None, "Training annotations.")
    train_images: str | Path | None = setting(None, "Training images.")
    val_ann: str | Path | None = setting(None, "Validation annotations.")
    val_images: str | Path | None = setting(None, "Validation images.")
    size: Size | None = setting(None, f"Input size [{per_task(lambda t: size_text(t.recipe.size))}"
                                "; WxH: longer x shorter side].")
    epochs: int | None = setting(None, f"Epochs [{per_task('recipe.epochs')}].", min=1,
                                 group=SCHEDULE)
    # global: split over the processes
    batch_size: int | None = setting(None, "Global batch (split over processes) "
                                     f"[{per_task('recipe.batch_size')}].", min=1, group=SCHEDULE)
    # scaled linearly to the batch size when left to the recipe
    lr: float | None = setting(None, "Base lr [{} images, scaled to --batch-size].".format(
        per_task(lambda t: f"{t.recipe.lr:g} per {t.recipe.base_batch}")), min=0.0,
        group=SCHEDULE)
    optimizer: str | None = setting(None, f"[{per_task('recipe.optimizer')}]", group=SCHEDULE)
    momentum: float = setting(0.9, min=0.0, group=SCHEDULE, api="SGD momentum.")
    weight_decay: float | None = setting(None, f"[{WEIGHT_DECAY}] (not on BN/bias).", min=0.0,
                                         group=SCHEDULE)
    warmup_iters: int | None = setting(None, "Linear warm-up from lr/3 [min(500, 10% of the "
                                       "steps)].", min=0, group=SCHEDULE)
    clip_grad: float | None = setting(None, "Max gradient L2 norm [{}]; 0 = off.".format(
        per_task(lambda t: f"{t.recipe.clip_grad:g}" if t.recipe.clip_grad else "none")),
        min=0.0, group=SCHEDULE)
    augment: str | None = setting(None, "ssd: photometric+expand+crop+flip; ssdlite: crop+flip; "
                                  "flip; none; segmentation: finetune (rescale 0.75-2 + crop + "
                                  "flip), search (rescale 0.5 + crop) "
                                  f"[{per_task('default_augment')}].")
    workers: int = setting(2, min=0, api="Data-loading processes.")
    threads: int = setting(0, THREADS_HELP, min=0, max=MAX_THREADS, group=RUN)
    seed: int = setting(0, "Seed for new layers, data order, augmentation.")
    device: str = setting("auto", api=DEVICE)
    checkpoint_every: int = setting(0, "Training state every STEPS steps (always at the end of "
                                    "every epoch).", min=0, metavar="STEPS", group=RUN)
    # steps between metrics lines (and plain log lines off a terminal)
    log_every: int = setting(10, "A metrics line every STEPS steps (and, when stderr is not a "
                             "terminal, a plain log line).", min=1, metavar="STEPS", group=RUN)
    # TensorBoard folder [$FNACLI_TENSORBOARD, else none]
    tensorboard: str | Path | None = setting(None, "Also log losses, lr and AP to TensorBoard "
                                             "event files in DIR.", **TENSORBOARD)
    # steps of this run, then stop (checkpointed)
    stop_after: int | None = setting(None, "Stop (checkpointed) after STEPS steps of this run; "
                                     "continue with --resume.", min=1, metavar="STEPS", group=RUN)
    resume: bool = setting(False, "Continue from FINAL.ckpt.")
    force: bool = setting(False, "Overwrite FINAL and start over.")
    on_message: Message | None = setting(None, api=ON_MESSAGE)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(threads: int, workers: int = 0) -> int:
    """``threads``, or when 0 the default: the cores a process of this run gets (the
    processes of a torchrun on this node share them) less one per data-loading worker, at
    least 1. Torch's own default (every core) plus busy workers oversubscribe the cores: on
    the tutorial's search it ran 2.5x slower than one thread."""
    if threads:
        return threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpu_cores() // max(local, 1) - workers)


def in_processes(step: Callable[[Any, DistEnv], R], cfg: Any) -> R:
    """``step(cfg, env)`` in the process group, with ``cfg``'s threads (``choose_threads``);
    the result knows whether it is rank 0's."""
    threads = choose_threads(getattr(cfg, "threads", 0), getattr(cfg, "workers", 0))
    with distributed(cfg.device, threads) as env:
        result = step(cfg, env)
        result.is_main = env.is_main
        return result


def make_config(cls: type[C], args: tuple, kwargs: dict) -> C:
    """``step(Config(...))``, ``step(Config(...), field=value)`` (the config with those fields
    replaced) or ``step(*fields, **fields)``: the config either way, its numbers within their
    settings' ranges (the CLI's own checks, for library callers)."""
    if args and isinstance(args[0], cls):
        if len(args) > 1:
            raise TypeError(f"a {cls.__name__} is the only positional argument; give other "
                            "fields by name")
        cfg = dataclasses.replace(args[0], **kwargs) if kwargs else args[0]
    else:
        cfg = cls(*args, **kwargs)
    check(cfg)
    return cfg


def step(cls: type[C]) -> Callable[[Callable[[C], R]], Callable[..., R]]:
    """Decorator: ``fn(cfg) -> result`` becomes a public step. Its signature and docstring are
    the fields of ``cls`` (types, defaults, meanings: ``help(fnacli.remap)`` lists them), it
    takes a config or its fields (``make_config``), and its errors name the parameters as a
    caller wrote them (``output: …``), keeping the flag (``-o: …``) for the CLI."""

    def wrap(fn: Callable[[C], R]) -> Callable[..., R]:
        names = _flag_names(cls)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> R:
            cfg = make_config(cls, args, kwargs)
            try:
                return fn(cfg)
            except UserError as e:
                raise _named(e, names) from e.__cause__

        run.__signature__ = signature_of(cls, fn)  # type: ignore[attr-defined]
        run.__doc__ = docstring_of(cls, fn)
        return run

    return wrap


def _flag_names(cls: type) -> dict[str, str]:
    """Each spelling the CLI has for a field of ``cls`` (its flags, ``-o`` for ``--output``,
    an upper-case metavar such as ``SEED``) -> the field's name."""
    names: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        spellings = [*f.metadata.get("flags", ()), flag_of(f)]
        if flag_of(f) == "--output":
            spellings.append("-o")
        metavar = f.metadata.get("metavar") or ""
        if metavar.replace("_", "").isalpha() and metavar.isupper():
            spellings.append(metavar)
        names.update(dict.fromkeys(spellings, f.name))
    return names


def _named(e: UserError, names: dict[str, str]) -> UserError:
    """``e`` with a leading flag (``--epochs: …``) replaced by its parameter (``epochs: …``)."""
    head, sep, rest = str(e).partition(":")
    if not sep or head not in names or type(e) is not UserError:
        return e
    return UserError(f"{names[head]}:{rest}", e.cli_message)


class _Annotation:
    """A type as written in the source (``str | Path``), shown without quotes by ``help``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_of(cls: type, fn: Callable) -> inspect.Signature:
    """The fields of ``cls`` as parameters (positional ones first, then keyword-only)."""
    params = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                   else inspect.Parameter.empty)
        kind = (inspect.Parameter.KEYWORD_ONLY if f.kw_only
                else inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        params.append(inspect.Parameter(f.name, kind, default=default,
                                        annotation=_Annotation(ann)))
    params.sort(key=lambda p: p.kind == inspect.Parameter.KEYWORD_ONLY)
    ret = inspect.signature(fn).return_annotation
    return inspect.Signature(params, return_annotation=_Annotation(ret) if isinstance(ret, str)
                             else ret)


def signature_text(fn: Callable) -> str:
    """A step's signature as docs/api.md shows it: one parameter a line."""
    sig = inspect.signature(fn)
    lines, star = [f"fnacli.{fn.__name__}("], False
    for p in sig.parameters.values():
        if p.kind == inspect.Parameter.KEYWORD_ONLY and not star:
            lines.append("    *,")
            star = True
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"    {p.name}: {p.annotation!r}{default},")
    return "\n".join(lines) + f"\n) -> {sig.return_annotation!r}"


def docstring_of(cls: type, fn: Callable) -> str:
    """``fn``'s docstring, then one entry per parameter: its type, default and meaning."""
    lines = [inspect.cleandoc(fn.__doc__ or ""), "",
             f"Takes a ``{cls.__name__}`` (plus fields to replace, by name) or its fields.",
             "Bad input raises ``fnacli.UserError`` naming the parameter.", "",
             "Parameters", "----------"]
    for p in signature_of(cls, fn).parameters.values():
        f = cls.__dataclass_fields__[p.name]
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"{p.name} : {p.annotation!r}{default}")
        meaning = " ".join(t for t in (f.metadata.get("help"), f.metadata.get("api")) if t)
        lines += textwrap.wrap(meaning or "(undocumented)", 88,
                               initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


class Reporter:
    """Messages of one step: to the ``fnacli`` logger and the config's callback (rank 0)."""

    def __init__(self, callback: Message | None = None, enabled: bool = True) -> None:
        self.callback, self.enabled = callback, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        log.info(message)
        if self.callback is not None:
            self.callback(message)

    def warning(self, message: str) -> None:
        self(f"warning: {message}")


def refuse_stdout(output: str | Path) -> None:
    """A checkpoint is binary, and stdout carries text results: no ``-o -``."""
    if str(output) == "-":
        raise UserError("-o: a checkpoint is binary and cannot go to stdout; give a "
                        ".safetensors path")


def parse_size(text: str, flag: str = "--size", min_side: int = 32) -> tuple[int, int]:
    """'320' -> (320, 320); '1333x800' (or '1333 × 800') -> (1333, 800) as (width, height);
    sides from ``min_side`` to ``MAX_SIDE``."""
    parts = [p.strip() for p in str(text).lower().replace("×", "x").split("x")]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals, default=0) < min_side:
        raise UserError(f"{flag}: expected N or WxH with sides of at least {min_side} "
                        f"pixel{'s' if min_side > 1 else ''}, got {text!r}")
    return check_side_bound((vals[0], vals[-1]), flag)


def check_side_bound(size: tuple[int, int], what: str) -> tuple[int, int]:
    """``size`` if no side exceeds ``MAX_SIDE`` (checked before any work: past it the first
    batch runs out of memory); else a UserError naming ``what``."""
    if max(size) > MAX_SIDE:
        raise UserError(f"{what}: sides of at most {MAX_SIDE} pixels, got "
                        f"{size[0]}x{size[1]}")
    return size


def as_size(size: Size | None, flag: str = "--size", min_side: int = 32
            ) -> tuple[int, int] | None:
    """A size given as N, (W, H) or text, as (width, height); None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        size = str(size)
    if isinstance(size, str):
        return parse_size(size, flag, min_side)
    w, h = size
    return check_side_bound((int(w), int(h)), flag)


def run_files(output: str | Path) -> tuple[Path, Path]:
    """OUTPUT.ckpt (training state for resume) and OUTPUT.metrics.jsonl."""
    return Path(f"{output}.ckpt"), Path(f"{output}.metrics.jsonl")


def check_fresh_run(state_path: Path, metrics_path: Path, resume: bool, force: bool,
                    what: str = "training") -> None:
    """Resume needs the state; a fresh run refuses an earlier run's state unless forced. A
    metrics file without a state (a run that crashed or was killed before its first save)
    holds nothing to continue from and never blocks a rerun (``check_earlier_run``)."""
    from fnacli.io import check_earlier_run

    check_earlier_run(state_path, resume, force, f"{what} state")


def check_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return device


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (0: unchanged) for a step, and restored
    after it: a library call leaves the caller's process as it found it (a thread pool
    enlarged behind a caller's back also hangs a child it forks later)."""
    import torch

    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextmanager
def distributed(device: str, threads: int = 0) -> Iterator[DistEnv]:
    """The process group (under torchrun) or a single process, set up and torn down."""
    from fnacli.train import init_distributed, shutdown_distributed

    with torch_threads(threads):
        env = init_distributed(None if check_device(device) == "auto" else device)
        _main_logging(env.is_main)
        try:
            yield env
        finally:
            shutdown_distributed(env)


def _main_logging(is_main: bool) -> None:
    """Other ranks log warnings only (their messages would repeat rank 0's)."""
    if not is_main:
        log.setLevel(logging.WARNING)


def task_of(name: str | None, what: str = "--task") -> Any:
    from fnacli.tasks import get_task, task_names

    if name is None:
        raise UserError(f"{what}: required ({' or '.join(task_names())})")
    return get_task(name, what)
