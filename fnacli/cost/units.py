"""MAdds per output position of single convs and linear layers, counted once by fvcore and
kept on disk, and the convs an MBConv is made of.

A network's MAdds are a sum over its convs, and a conv's count at any size is its count at
one output position times the positions (``fnacli.cost.count.unit_madds``); every table adds
up these per-position units, so a shape that recurs across layers, tables and processes is
traced once.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fnacli import __version__
from fnacli.cost.cache import cache_dir, save_text
from fnacli.cost.count import UnitKey, unit_madds
from fnacli.spec import Op

_CHUNK = 200  # units per fvcore trace: amortises the trace, bounds memory, paces progress


@functools.cache
def parse_op(text: str) -> Op:
    """``Op.parse``, once per op text (tables parse the same few ops tens of thousands of
    times)."""
    return Op.parse(text)


def mbconv_units(op: Op, cin: int, cout: int) -> list[tuple[int, int, int, int]]:
    """The convs of an MBConv as (cin, cout, kernel, groups): expand (if any), dw, project."""
    hidden = cin * op.expand
    units = [(cin, hidden, 1, 1)] if op.expand != 1 else []
    return units + [(hidden, hidden, op.kernel, hidden), (hidden, cout, 1, 1)]


def mbconv_params(op: Op, cin: int, cout: int) -> int:
    """Exact parameter count of ``MBConv(cin, cout, k, e)``: conv weights (no bias) + BN γ/β."""
    return sum(a // g * b * k * k + 2 * b for a, b, k, g in mbconv_units(op, cin, cout))



# -- per-position costs of single convs / linears, shared by every table -----------------
# (cin, cout, kernel, groups) -> MAdds per output position; kernel 0 = linear. Kept on disk
# (``unit_cache_path``) so a later process, e.g. the next `fnacli madds SPEC`, traces only
# the shapes no earlier run met.
PP: dict[UnitKey, int] = {}
_PP_DISK: dict[str, bool] = {}  # cache file path -> read into PP already
_PARALLEL_MIN = 1000  # missing units worth a second process


def unit_cache_path() -> Path:
    return cache_dir() / f"units-{__version__}.json"


def _read_unit_cache() -> None:
    path = unit_cache_path()
    if _PP_DISK.get(str(path)):
        return
    _PP_DISK[str(path)] = True
    try:
        rows = json.loads(path.read_text())
        for cin, cout, k, g, madds in rows:
            PP.setdefault((int(cin), int(cout), int(k), int(g)), int(madds))
    except (OSError, ValueError, TypeError):
        pass  # no cache yet, or a damaged one: counted again


def _write_unit_cache() -> None:
    save_text(unit_cache_path(), json.dumps([[*k, v] for k, v in sorted(PP.items())]),
              "per-layer MAdds")


def _count_chunks(chunks: list[list[UnitKey]]) -> Iterator[list[int]]:
    """Per-position counts of each chunk, in order; on two cores when there is enough work
    and a second core is idle (on a busy machine a second process only adds contention)."""
    if sum(map(len, chunks)) >= _PARALLEL_MIN and len(chunks) > 1 and _idle_cores() >= 1.5:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit the imported torch/fvcore instead of importing them again
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
            yield from pool.map(unit_madds, chunks)
        return
    for chunk in chunks:
        yield unit_madds(chunk)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _idle_cores() -> float:
    """Usable cores minus the 1-minute load average (this process included)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return _usable_cores() - load


def fill_units(keys: Iterable[UnitKey], progress: Bar | None) -> None:
    _read_unit_cache()
    missing = sorted({k for k in keys if k not in PP})
    if not missing:
        return
    if progress:
        progress.add(len(missing))
    chunks = [missing[i:i + _CHUNK] for i in range(0, len(missing), _CHUNK)]
    for chunk, counts in zip(chunks, _count_chunks(chunks), strict=True):
        PP.update(zip(chunk, counts, strict=True))
        if progress:
            progress.advance(len(chunk))
    _write_unit_cache()


class Bar:
    """A rich progress bar on stderr (transient), or nothing."""

    def __init__(self, bar: object, task: object) -> None:
        self.bar, self.task = bar, task

    def add(self, n: int) -> None:
        self.bar.update(self.task, total=(self.bar.tasks[0].total or 0) + n)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


@contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Bar | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                  console=console, transient=True,
                  disable=not console.is_terminal) as bar:  # no bar in a log file
        yield Bar(bar, bar.add_task(what, total=0))
