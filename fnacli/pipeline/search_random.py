"""DetNAS's random baseline as a step (``search --strategy random --retrain N``): N
architectures drawn uniformly under the MAdds limit, written as specs to fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fnacli.errors import UserError
from fnacli.pipeline.common import as_size, task_of
from fnacli.pipeline.search_options import (
    ONESHOT_COST_SCOPE,
    SearchResult,
    cost_input_size,
    madds_window,
)

if TYPE_CHECKING:
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig


def summary_path(folder: Path) -> Path:
    """DIR.baseline.json: the draw's summary (specs, scoped and detector MAdds)."""
    return folder.with_name(folder.name + ".baseline.json")


def random_baseline(o: OneShotSearchConfig) -> SearchResult:
    """DetNAS's random baseline: ``retrain`` architectures drawn uniformly from the space of
    the supernet under ``max_madds``, written as specs into the folder ``output`` (fine-tune
    each with the searched architecture's settings; recipes/detnas_random_baseline.sh does).
    Nothing is trained or scored."""
    import json

    from fnacli.cost.lut import load_or_build_lut
    from fnacli.io import write_text_atomic
    from fnacli.search import evolution as E
    from fnacli.search.supernet_io import read_supernet

    if o.task is None:
        raise UserError("--task: needed to count MAdds for --retrain")
    task = task_of(o.task)
    out = Path(o.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --retrain writes a folder of specs; this is a file")
    summary = summary_path(out)
    if summary.exists() and not o.force:
        raise UserError(f"{summary}: exists (use --force to draw again)")
    ckpt = read_supernet(o.supernet)
    size = cost_input_size(o, task, as_size(o.size) or task.recipe.size)
    scope = o.cost_scope or ONESHOT_COST_SCOPE
    lut = load_or_build_lut(ckpt.space, task, size, progress=True)
    floor, limit = madds_window(o, ckpt.seed_spec, lambda a: lut.arch_cost(a, scope))
    enc = E.Encoding(ckpt.space)
    picks = E.random_baseline(enc, lambda a: lut.arch_cost(a, scope), o.retrain, limit, o.seed,
                              min_madds=floor)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (genome, madds) in enumerate(picks, start=1):
        path = out / f"random-{k}.json"
        write_text_atomic(path, enc.arch(genome).to_json())
        entries.append({"spec": str(path), "madds": madds,
                        "detector_madds": lut.arch_madds(enc.arch(genome))})
    doc = {"strategy": "random-baseline", "task": task.name, "space": ckpt.space.name,
           "max_madds": limit, "min_madds": floor, "cost_scope": scope,
           "cost_size": list(size), "seed": o.seed,
           "architectures": entries}
    # beside the folder, not in it: the folder holds specs only ('fnacli madds DIR/*.json')
    write_text_atomic(summary, json.dumps(doc, indent=2) + "\n")
    message = (f"{out}: {len(entries)} random architectures of the space"
               + (f" within {E.window_text(floor, limit)} MAdds ({scope})"
                  if limit or floor else "")
               + "; fine-tune each with the searched architecture's settings")
    return SearchResult("random", True, message, str(out), doc)


