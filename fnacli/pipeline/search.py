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

from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.search_options import (  # noqa: F401 - the step's public names
    DIFFERENTIABLE_COST_SCOPE,
    FILE_ROLES,
    ONESHOT_COST_SCOPE,
    STRATEGIES,
    SearchOptions,
    SearchResult,
)


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
