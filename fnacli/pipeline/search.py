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
    """Either strategy: ``search(DifferentiableSearchConfig(...))``,
    ``search(OneShotSearchConfig(...))`` or the fields with ``strategy=``."""
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
