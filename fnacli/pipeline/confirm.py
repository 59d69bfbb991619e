"""The one-shot search's confirmation stage (``search --confirm-top K``): successive halving
over the K best candidates of the evolution or random search, each trained as the searched
network will be, from the seed.

Supernet fitness ranks candidates by weights they share; what the search is for is the
network remapped from the seed and fine-tuned on its own. So the K best candidates (by
fitness) are each remapped from the seed (``fnacli remap``'s step, with its default rules),
fine-tuned for ``E`` epochs (``fnacli finetune``'s step and its one training loop,
``fnacli.train.fit``) on the supernet's training images (the training split minus the
fitness images) and scored with the search's metric on the fitness set. The better half
(ties: the better search rank) is kept and fine-tuned again from the remap for ``2E``
epochs, then ``4E``, … until one is left: the winner, which becomes the searched
checkpoint's derived architecture.

Every rung starts from the remap, so a rung's metric is that of a whole fine-tuning schedule
of its length (not a longer run cut short). The runs live in ``OUT.confirm/`` (remapped
backbones, fine-tuned detectors and their training states) and the table in
``OUT.confirm.json`` after every run, so ``--resume`` reuses finished runs and continues an
interrupted fine-tune. No paper has this stage; it is fnacli's.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Reporter, TrainOptions
from fnacli.report import Table

STATE_FORMAT = "fnacli/oneshot-confirm@1"
# options of the search that are not the confirmation's fine-tuning recipe
_NOT_RECIPE = ("task", "data", "train_ann", "train_images", "val_ann", "val_images", "size",
               "epochs", "seed", "resume", "force", "on_message", "tensorboard", "stop_after")
# how the runs are made, not what they are: a resumed confirmation may change them
_HOW_TO_RUN = ("workers", "threads", "device", "checkpoint_every", "log_every")


def first_rung_epochs(task: Any) -> int:
    """The first rung's fine-tuning epochs by default: a tenth of the task's fine-tuning
    recipe (SSDLite 6 of 60, RetinaNet 1 of 12), at least one."""
    return max(1, task.recipe.epochs // 10)


def keep_count(n: int) -> int:
    """How many of a rung's ``n`` candidates go on: the better half, rounded up."""
    return max(1, math.ceil(n / 2))


def successive_halving(count: int, epochs: int, score: Callable[[int, int], float | None]
                       ) -> tuple[list[dict], int | None]:
    """Successive halving over candidates ``0..count-1`` (best search rank first):
    ``score(i, epochs)`` is candidate i's metric after a fine-tuning of ``epochs`` (None:
    stopped). Each rung scores every candidate left, keeps the better half (:func:`keep_count`;
    ties and NaN: the better search rank) and doubles the epochs, until one is left.
    Returns the rungs (``rung``, ``epochs``, ``runs``: ``candidate``, ``metric``, ``kept``)
    and the winner (None when stopped)."""
    if count < 1 or epochs < 1:
        raise ValueError("successive halving needs a candidate and an epoch")
    alive, budget, rungs = list(range(count)), epochs, []
    while True:
        metrics: dict[int, float] = {}
        for i in alive:
            m = score(i, budget)
            if m is None:
                return rungs, None
            metrics[i] = float(m)
        order = sorted(alive, key=lambda i: (-_finite(metrics[i]), i))
        kept = set(order[:keep_count(len(alive))])
        rungs.append({"rung": len(rungs), "epochs": budget,
                      "runs": [{"candidate": i, "metric": metrics[i], "kept": i in kept}
                               for i in alive]})
        if len(kept) == 1:
            return rungs, order[0]
        alive, budget = sorted(kept), budget * 2


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


@dataclass
class Confirmation:
    """The confirmation's outcome: ``table`` (metadata ``search.confirm`` and the result's
    ``details["confirm"]``) and the winning candidate (None when it stopped early)."""

    table: dict
    winner: Any | None
    runs: int = 0  # fine-tuning runs finished (this run's and reused ones)


def confirm_table(table: dict) -> Table:
    """Per rung and candidate: the search rank, fitness, epochs and confirmation metric."""
    metric = table["metric"]
    rows = [(str(r["rung"]), str(run["rank"]), f"{run['fitness']:.4f}", str(r["epochs"]),
             f"{run['metric']:.4f}", "yes" if run["kept"] else "no")
            for r in table["rungs"] for run in r["runs"]]
    win = table.get("winner")
    caption = (f"winner: search rank {win['rank']} (the derived architecture)" if win
               else "stopped before a winner (continue with --resume)")
    return Table(f"confirmation: successive halving of the top {table['top']}, {metric} on the "
                 f"fitness set after fine-tuning", ("rung", "rank", "fitness", "epochs", metric,
                                                    "kept"),
                 rows, right=("rung", "rank", "fitness", "epochs", metric), caption=caption)


def confirm(o: Any, ranked: Sequence[Any], encoding: Any, task: Any, size: tuple[int, int],
            fit_set: Any, images: Any, metric: str, files: dict[str, Path], env: Any,
            say: Reporter, identity: dict) -> Confirmation:
    """Successive halving over the ``o.confirm_top`` best of ``ranked`` (``Candidate``s, best
    first). ``images``: the supernet's training images (what each candidate is fine-tuned on);
    ``fit_set``: the fitness set (what it is scored on); ``identity``: the search's (a resumed
    confirmation must share it)."""
    from fnacli.fingerprint import file_sha256, json_sha256
    from fnacli.io import write_text_atomic
    from fnacli.train import barrier, check_identity

    top = list(ranked[:o.confirm_top])
    epochs = o.confirm_epochs or first_rung_epochs(task)
    seed = str(o.seed_checkpoint)
    state_path, folder = files["confirm"], files["confirm_runs"]
    recipe = {k: getattr(o, k) for k in TrainOptions.__dataclass_fields__
              if k not in (*_NOT_RECIPE, *_HOW_TO_RUN)}
    ident = json.loads(json.dumps({
        "search": identity, "candidates": [c.key for c in top], "epochs": epochs,
        "metric": metric, "size": list(size), "seed": o.seed, "recipe": recipe,
        "seed_checkpoint": file_sha256(seed) if Path(seed).is_file() else seed},
        sort_keys=True, default=str))
    results: dict[str, dict] = {}
    if o.resume and state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
            if state.get("format") != STATE_FORMAT:
                raise ValueError(state.get("format"))
            saved, results = state["identity"], dict(state["results"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{state_path}: not a readable fnacli confirmation state "
                            f"({type(e).__name__}: {e})") from None
        check_identity(saved, ident, state_path)
    elif not o.resume and env.is_main:  # start over (a resumed run keeps an unfinished run)
        state_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    barrier(env)
    if env.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    barrier(env)
    say(f"confirmation: successive halving of the top {len(top)} candidates, remapped from "
        f"{seed}, fine-tuned on {len(images)} training images for {epochs} "
        f"epoch{'s' if epochs != 1 else ''} (doubled each rung), {metric} on the "
        f"{len(fit_set)} fitness images")

    def score(i: int, budget: int) -> float | None:
        key = f"{i + 1}/{budget}"
        if key not in results:
            # the run's files are named by its settings: no stale file of another run is taken
            name = f"rank{i + 1}-{json_sha256([ident, top[i].key])[:12]}"
            stats = train_and_score(o, encoding.arch(top[i].genome), name, budget, task, size,
                                    fit_set, images, folder, env)
            if stats is None:
                return None
            if metric not in stats:
                raise UserError(f"--metric {metric!r}: not among the evaluation's numbers "
                                f"({', '.join(stats)})")
            results[key] = {"rank": i + 1, "epochs": budget, "key": top[i].key,
                            "metric": float(stats[metric]), "stats": stats}
            if env.is_main:
                write_text_atomic(state_path, json.dumps(
                    {"format": STATE_FORMAT, "identity": ident, "results": results}))
            say(f"confirmation: rank {i + 1} after {budget} epochs: {metric} "
                f"{results[key]['metric']:.4f} (fitness {top[i].fitness:.4f})")
        return results[key]["metric"]

    rungs, win = successive_halving(len(top), epochs, score)
    table = {"top": len(top), "epochs": epochs, "metric": metric,
             "seed_checkpoint": Path(seed).name if Path(seed).is_file() else seed,
             "rungs": [{"rung": r["rung"], "epochs": r["epochs"],
                        "runs": [{"rank": run["candidate"] + 1,
                                  "key": top[run["candidate"]].key,
                                  "fitness": top[run["candidate"]].fitness,
                                  "metric": run["metric"], "kept": run["kept"]}
                                 for run in r["runs"]]} for r in rungs]}
    if win is None:
        return Confirmation(table, None, len(results))
    table["winner"] = {"rank": win + 1, "key": top[win].key, "fitness": top[win].fitness,
                       "arch": encoding.arch(top[win].genome).to_dict()}
    return Confirmation(table, top[win], len(results))


def train_and_score(o: Any, spec: Any, name: str, epochs: int, task: Any, size: tuple[int, int],
                    fit_set: Any, images: Any, folder: Path, env: Any
                    ) -> dict[str, float] | None:
    """Remap the seed ``o.seed_checkpoint`` onto ``spec`` (once per candidate: FOLDER/NAME
    .remapped.safetensors), fine-tune it for ``epochs`` on ``images`` with the search's recipe
    options (FOLDER/NAME-eEPOCHS.safetensors; an interrupted run continues) and score it on
    ``fit_set``: the task's numbers, the same on every process (None when the fine-tuning
    stopped early)."""
    from fnacli.model_checkpoint import load_detector
    from fnacli.pipeline.finetune import FinetuneConfig, _run
    from fnacli.pipeline.remap import remap
    from fnacli.train import barrier

    remapped = folder / f"{name}.remapped.safetensors"
    if env.is_main and not remapped.is_file():
        tmp = remapped.with_name(f"{name}.tmp.safetensors")
        remap(str(o.seed_checkpoint), spec, tmp, force=True)
        tmp.replace(remapped)
    barrier(env)
    final = folder / f"{name}-e{epochs}.safetensors"
    if not final.is_file():
        resume = Path(f"{final}.ckpt").is_file()
        recipe = {k: getattr(o, k) for k in TrainOptions.__dataclass_fields__
                  if k not in _NOT_RECIPE}
        ft = _run(FinetuneConfig(**recipe, target=str(remapped), output=str(final),
                                 task=task.name, size=size, epochs=epochs, seed=o.seed,
                                 resume=resume, force=not resume, freeze_bn=o.freeze_bn,
                                 on_message=o.on_message), env, images)
        if not ft.finished:
            return None
    stats: list = [None]
    if env.is_main:
        model, _ = load_detector(final)
        stats[0] = {k: float(v) for k, v in task.evaluate(
            model, fit_set, batch_size=o.calib_batch, workers=o.workers,
            device=env.device).stats.items()}
    if env.distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(stats, src=0)
    barrier(env)
    return stats[0]
