"""What the pipeline steps share: building a config from arguments, messages, input sizes,
the files a resumable run leaves beside its output, and the distributed environment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fnacli.errors import UserError

if TYPE_CHECKING:
    from fnacli.train import DistEnv

log = logging.getLogger("fnacli")
C = TypeVar("C")
R = TypeVar("R")
Size = int | tuple[int, int] | str
Message = Callable[[str], None]


@dataclass(kw_only=True)
class TrainOptions:
    """What every training step takes (fine-tuning, both searches): the task, the data, the
    weight-side recipe (None: the task's ``recipe``) and how to run."""

    task: str | None = None
    data: str | Path | None = None  # COCO-layout folder
    train_ann: str | Path | None = None
    train_images: str | Path | None = None
    val_ann: str | Path | None = None
    val_images: str | Path | None = None
    size: Size | None = None
    epochs: int | None = None
    batch_size: int | None = None  # global: split over the processes
    lr: float | None = None  # scaled linearly to the batch size when left to the recipe
    optimizer: str | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    warmup_iters: int | None = None
    clip_grad: float | None = None  # 0: off
    augment: str | None = None
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 0
    log_every: int = 10  # steps between metrics lines (and plain log lines off a terminal)
    tensorboard: str | Path | None = None  # TensorBoard folder [$FNACLI_TENSORBOARD, else none]
    stop_after: int | None = None  # steps of this run, then stop (checkpointed)
    resume: bool = False
    force: bool = False
    on_message: Message | None = None


def in_processes(step: Callable[[Any, DistEnv], R], cfg: Any, threads: int = 0) -> R:
    """``step(cfg, env)`` in the process group; the result knows whether it is rank 0's."""
    with distributed(cfg.device, threads) as env:
        result = step(cfg, env)
        result.is_main = env.is_main
        return result


def make_config(cls: type[C], args: tuple, kwargs: dict) -> C:
    """``step(Config(...))`` or ``step(*fields, **fields)``: the config either way."""
    if len(args) == 1 and not kwargs and isinstance(args[0], cls):
        return args[0]
    return cls(*args, **kwargs)


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
    """'320' -> (320, 320); '1333x800' (or '1333 × 800') -> (1333, 800) as (width, height)."""
    parts = [p.strip() for p in str(text).lower().replace("×", "x").split("x")]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals, default=0) < min_side:
        raise UserError(f"{flag}: expected N or WxH with sides of at least {min_side} "
                        f"pixel{'s' if min_side > 1 else ''}, got {text!r}")
    return (vals[0], vals[-1])


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
    return (int(w), int(h))


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
def distributed(device: str, threads: int = 0) -> Iterator[DistEnv]:
    """The process group (under torchrun) or a single process, set up and torn down."""
    import torch

    from fnacli.train import init_distributed, shutdown_distributed

    if threads:
        torch.set_num_threads(threads)
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
