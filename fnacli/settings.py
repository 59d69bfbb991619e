"""A step's settings, each declared once: on the step's config dataclass, with ``setting``.

A setting is a dataclass field that also records what it means (``help``), the values it
takes (``metavar``, ``min``/``max``) and the group it belongs to; the CLI turns every setting
into the option of that flag, default and meaning (``fnacli.cli.common.option``), and
:func:`check` holds library callers to the same ranges. Kept free of torch: the CLI imports
the configs to build ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, field, fields
from typing import Any

from fnacli.errors import UserError

# upper bounds checked before any work: past them a run cannot succeed (memory, threads)
MAX_THREADS = 1024  # torch aborts (or the machine thrashes) far before 100000 threads
MAX_SIDE = 8192  # pixels per image side: 4x Cityscapes' width, a 100000-pixel side is 120 GB
MAX_SAMPLES = 512  # images for an export's parity check

# groups of settings (the CLI's help panels)
DATA, SCHEDULE, RUN = "Data", "Schedule", "Run"
# meanings of the library-only fields several configs share
ON_MESSAGE = "Called with each message (also sent to the 'fnacli' logger)."
DEVICE = "auto (CUDA when available), cpu or cuda."


def setting(default: Any = MISSING, help: str | None = None, *, flags: tuple[str, ...] = (),
            kw_only: Any = MISSING, **meta: Any) -> Any:
    """A config field with its meaning: ``flags`` (default ``--field-name``), ``metavar``,
    ``min``/``max``, ``group``, and any other option keyword the CLI passes on (``envvar``,
    ``show_envvar``); ``kw_only`` as ``dataclasses.field``'s."""
    meta = {"help": help, "flags": flags, **meta}
    return field(default=default, kw_only=kw_only,
                 metadata={k: v for k, v in meta.items() if v not in (None, ())})


def flag_of(f: Field) -> str:
    """The command-line spelling of setting ``f``."""
    return f.metadata.get("flags", ("--" + f.name.replace("_", "-"),))[0]


def number_text(v: float) -> str:
    """A number as help texts write it: 4e-5, not 4e-05."""
    return f"{v:g}".replace("e-0", "e-")


def check(cfg: Any) -> None:
    """Every number of ``cfg`` finite and within its setting's ``min``/``max``: the parser
    takes 'inf' and 'nan', which no setting means, and a library call gets the ranges the
    parser enforces. The error names the parameter (``epochs``) and, for the CLI, its flag."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(v, float) and not math.isfinite(v):
            raise _error(f, f"expected a finite number, got {v}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = " and ".join(f"{w} {b}" for w, b in (("at least", lo), ("at most", hi))
                                  if b is not None)
            raise _error(f, f"expected {bounds}, got {v}")


def _error(f: Field, detail: str) -> UserError:
    return UserError(f"{f.name}: {detail}", f"{flag_of(f)}: {detail}")
