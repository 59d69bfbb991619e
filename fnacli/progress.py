"""How a training loop reports to a person (stderr) and, optionally, to TensorBoard.

In a terminal: a live rich bar whose progress, ETA and elapsed time come first, so that they
stay on screen at 80 columns, and whose status text (epoch, loss, …) is cut to what fits.
Anywhere else (a cluster job's log file, a pipe, a notebook): no bar, but one plain line every
``log_every`` steps and one per epoch, with step, epoch, the loss terms averaged since the
last line, lr, throughput and ETA, as messages of the ``fnacli`` logger (the CLI prints them
on stderr unwrapped, so that ``grep``/``tail -f`` work on the log).

TensorBoard (``--tensorboard DIR`` / ``FNACLI_TENSORBOARD``) gets the same numbers as scalars
through ``torch.utils.tensorboard``; the JSON-lines metrics files are written regardless.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from fnacli.errors import UserError

TENSORBOARD_ENV = "FNACLI_TENSORBOARD"
_NO_TENSORBOARD = ("--tensorboard: the 'tensorboard' package is not installed (pip install "
                   "'fnacli[tensorboard]')")


def fmt(v: object) -> str:
    """A number for people: integers as they are, floats to 4 significant digits
    (11.47, 0.00125, 1.235e-05), not ``11.473865509033203``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_duration(seconds: float) -> str:
    """h:mm:ss (days as 1d 2:03:04)."""
    s = max(0, int(round(seconds)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"


def tensorboard_dir(option: str | Path | None) -> Path | None:
    """``--tensorboard DIR`` if given, else ``$FNACLI_TENSORBOARD``, else None; a UserError
    when one is set but the ``tensorboard`` package is missing (call it before the work)."""
    import importlib.util

    value = option if option is not None else os.environ.get(TENSORBOARD_ENV) or None
    if value is None:
        return None
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError(_NO_TENSORBOARD)
    return Path(value)


def open_tensorboard(log_dir: str | Path, purge_step: int | None = None) -> Any:
    """A ``SummaryWriter`` on ``log_dir``; a resumed run passes the first step after its
    checkpoint, so TensorBoard drops what an interrupted run logged past the checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(_NO_TENSORBOARD) from None
    return SummaryWriter(str(log_dir), purge_step=purge_step or None)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class TrainLogger:
    """Progress of ``total`` steps (``done`` of them before this run) on stderr, rank 0 only.

    ``step()`` after every step: moves the bar (terminal). ``report()`` when the loop logs
    (every ``log_every`` steps): a plain line outside a terminal, scalars to TensorBoard.
    ``epoch_end()`` after each epoch; ``scalars()`` for extra TensorBoard values; ``log()``
    for a message that must not garble the bar. ``enabled=False`` makes everything a no-op.
    """

    def __init__(self, total: int, done: int, desc: str, enabled: bool, *,
                 epochs: int | None = None, images_per_step: int | None = None,
                 tensorboard: str | Path | None = None, unit: str = "step",
                 stream: IO[str] | None = None, terminal: bool | None = None) -> None:
        self.total, self.done0, self.done = total, done, done
        self.desc, self.enabled, self.epochs = desc, enabled, epochs
        self.images_per_step, self.unit = images_per_step, unit
        self._stream = stream
        self.terminal = enabled and (_is_terminal(self.stream) if terminal is None else terminal)
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.writer: Any = None
        if enabled and tensorboard is not None:
            # resumed at step ``done``: what was logged at steps up to ``done`` stays (the
            # checkpoint's own step included: its epoch's metrics were logged there)
            self.writer = open_tensorboard(tensorboard, purge_step=done + 1 if done else None)
        if self.terminal:
            self.bar = _live_bar(desc, self.stream, force_terminal=terminal)
            self.task = self.bar.add_task("", total=total, completed=done)

    @property
    def stream(self) -> IO[str]:
        # looked up at use: tests and callers may swap sys.stderr after construction
        return self._stream if self._stream is not None else sys.stderr

    def __enter__(self) -> TrainLogger:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.writer is not None:
            self.writer.close()

    # -- timing -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def eta(self) -> float | None:
        run = self.done - self.done0
        if run <= 0:
            return None
        return self.elapsed() / run * max(self.total - self.done, 0)

    def images_per_second(self) -> float | None:
        run, t = self.done - self.done0, self.elapsed()
        if not self.images_per_step or run <= 0 or t <= 0:
            return None
        return run * self.images_per_step / t

    # -- reporting ----------------------------------------------------------------------------
    def step(self, status: str = "", advance: int = 1) -> None:
        """One step done (``advance`` of them); ``status`` is the bar's text."""
        self.done += advance
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, description=status)

    def report(self, step: int, epoch: int | None, values: Mapping[str, float | str],
               lr: float | None = None, tag: str = "train") -> None:
        """The values of a logging step: a plain line (not a terminal) and TensorBoard (the
        numbers among them; text values only go on the line)."""
        if not self.enabled:
            return
        self.scalars(step, values, tag)
        if lr is not None:
            self.scalars(step, {"lr": lr}, tag)
        if self.terminal:
            return
        parts = [self._position(step, epoch)]
        parts += [f"{k} {fmt(v)}" for k, v in values.items()]
        if lr is not None:
            parts.append(f"lr {fmt(lr)}")
        parts += self._speed()
        self._line(" ".join(parts))

    def epoch_end(self, epoch: int, step: int, values: Mapping[str, float] | None = None,
                  tag: str = "val") -> None:
        """Epoch ``epoch`` (counted from 1) finished at ``step``, with its metrics."""
        if not self.enabled:
            return
        values = dict(values or {})
        numbers = {k: v for k, v in values.items() if isinstance(v, int | float)
                   and not isinstance(v, bool)}
        self.scalars(step, numbers, tag)
        text = f"{self.desc}: epoch {epoch}" + (f"/{self.epochs}" if self.epochs else "")
        text += f" done at {self.unit} {step}/{self.total}"
        if values:
            text += ": " + ", ".join(f"{k} {fmt(v)}" for k, v in values.items())
        text += " (" + ", ".join([f"elapsed {fmt_duration(self.elapsed())}",
                                  *self._speed(with_eta=True)]) + ")"
        self.log(text)

    def scalars(self, step: int, values: Mapping[str, float | str], tag: str = "train") -> None:
        """TensorBoard scalars ``tag/name`` at ``step`` (nothing without --tensorboard)."""
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                self.writer.add_scalar(f"{tag}/{k}" if tag else k, float(v), step)

    def log(self, text: str) -> None:
        """A message above the bar (terminal) or as its own line."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text, soft_wrap=True, highlight=False, markup=False)
        else:
            self._line(text)

    # -- helpers ------------------------------------------------------------------------------
    def _position(self, step: int, epoch: int | None) -> str:
        pct = 100 * step / self.total if self.total else 100.0
        where = f"{self.desc}: "
        if epoch is not None:
            where += f"epoch {epoch}" + (f"/{self.epochs}" if self.epochs else "") + " "
        return where + f"{self.unit} {step}/{self.total} ({pct:.0f}%)"

    def _speed(self, with_eta: bool = True) -> list[str]:
        out = []
        ips = self.images_per_second()
        if ips is not None:
            out.append(f"{ips:.3g} img/s" if ips < 1000 else f"{ips:.0f} img/s")
        eta = self.eta()
        if with_eta and eta is not None:
            out.append(f"eta {fmt_duration(eta)}")
        return out

    def _line(self, text: str) -> None:
        # to the ``fnacli`` logger, as every library message: the CLI shows it on stderr as a
        # plain line, a library caller decides (logging.basicConfig(level=logging.INFO))
        if self._stream is None:
            logging.getLogger("fnacli").info(text)
            return
        self._stream.write(text + "\n")
        self._stream.flush()


class SearchProgress:
    """Candidates on the training loop's progress bar, one line per generation (rank 0)."""

    def __init__(self, cfg: Any, enabled: bool, tensorboard: Path | None = None,
                 scope: str = "backbone") -> None:
        self.cfg, self.scope = cfg, scope  # what the MAdds count (the search's cost scope)
        self.bar = TrainLogger(cfg.total_candidates, 0, cfg.strategy, enabled, unit="candidate",
                               tensorboard=tensorboard)

    def __enter__(self) -> SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def candidate(self, c: Any, reused: bool) -> None:
        self.bar.step(f"last {self.cfg.metric} {c.fitness:.4f}")

    def round(self, r: dict) -> None:
        from fnacli.report import format_madds

        if r["event"] == "stop":
            self.bar.log(f"stopped early: {r['reason']}")
            return
        if r["event"] == "resume":
            self.bar.step(f"resumed after generation {r['generation']}", r["evaluated"])
            self.bar.done0 = self.bar.done  # the ETA counts this run's pace only
            return
        m = self.cfg.metric
        # TensorBoard: per generation, at the number of candidates evaluated so far
        self.bar.scalars(r["evaluated"], {f"best_{m}": r["best"], f"median_{m}": r["median"],
                                          f"overall_best_{m}": r["top_fitness"],
                                          "best_madds": r["best_madds"]}, "generation")
        eta = self.bar.eta()
        self.bar.log(
            f"generation {r['generation'] + 1}/{self.cfg.rounds}: best {m} {r['best']:.4f} "
            f"({self.scope} MAdds {format_madds(r['best_madds'])}), median {r['median']:.4f} "
            f"({format_madds(r['median_madds'])}); overall best {r['top_fitness']:.4f} "
            f"({format_madds(r['top_madds'])}); {r['evaluated']} evaluated"
            + (f", eta {fmt_duration(eta)}" if eta is not None else ""))


def _live_bar(desc: str, stream: IO[str], force_terminal: bool | None = None) -> Any:
    """rich's bar with the numbers that matter first: at 80 columns the description and the
    status text are cut, never the count, the elapsed time or the ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    return Progress(
        # narrow description and bar: at 80 columns the status keeps "epoch E/N loss L"
        TextColumn(desc, table_column=Column(no_wrap=True, overflow="ellipsis", max_width=14)),
        BarColumn(bar_width=8), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}",
                   table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        console=Console(file=stream, force_terminal=force_terminal), transient=False,
        expand=True)
