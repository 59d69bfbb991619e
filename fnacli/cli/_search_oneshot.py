"""`fnacli search SUPERNET --strategy evolution|random`: DetNAS's one-shot search.

``run_oneshot_search(**options)`` is what the ``search`` command calls for these strategies;
``OPTIONS`` lists the command-line options it takes (name -> (type, typer option)), which
``fnacli/cli/search.py`` declares on the command. Options the differentiable search also has
keep their names and meaning there; the one-shot-only ones are in ``ONESHOT_ONLY``.

Files (OUT = the -o path):
- the trained supernet, ``--trained`` (default OUT with ``.oneshot.safetensors``), with its
  training state ``TRAINED.ckpt`` and metrics ``TRAINED.metrics.jsonl``;
- ``OUT.search.json`` (search state: population, cache, RNG; ``--resume`` continues from the
  last finished generation) and ``OUT.history.jsonl`` (one line per candidate and per
  generation);
- OUT itself, a ``searched`` checkpoint (see docs/evolution.md).

Kept free of torch at import time (``fnacli --help``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from fnacli.cli.common import checkpoint_output, err_console, fail, print_result

STRATEGIES = ("evolution", "random")
# Supernet training epochs: DetNAS trains its supernet with the detector's usual 1x COCO
# schedule (12 epochs); for SSDLite a fifth of its 300-epoch recipe.
ONESHOT_EPOCHS = {"ssdlite": 60, "retinanet": 12}

OPTIONS: dict[str, tuple[Any, Any]] = {
    # -- shared with the differentiable search (same names) ----------------------------------
    "supernet": (str, typer.Argument(..., metavar="SUPERNET",
                                     help="Supernet checkpoint from 'fnacli expand' (or, with "
                                          "--skip-training, one trained one-shot).")),
    "output": (str, typer.Option(..., "--output", "-o", metavar="SEARCHED",
                                 help="Output searched checkpoint (.safetensors).")),
    "task": (str | None, typer.Option(None, "--task", metavar="ssdlite|retinanet",
                                      help="Detector to search for [from the trained supernet "
                                           "with --skip-training].")),
    "data": (str | None, typer.Option(None, "--data", metavar="DIR",
                                      help="COCO-layout dataset folder.")),
    "train_ann": (str | None, typer.Option(None, "--train-ann", metavar="JSON",
                                           help="Training annotations.")),
    "train_images": (str | None, typer.Option(None, "--train-images", metavar="DIR",
                                              help="Training images.")),
    "val_ann": (str | None, typer.Option(None, "--val-ann", metavar="JSON",
                                         help="Held-out annotations (fitness).")),
    "val_images": (str | None, typer.Option(None, "--val-images", metavar="DIR",
                                            help="Held-out images.")),
    "size": (str | None, typer.Option(None, "--size", metavar="N|WxH",
                                      help="Input size [ssdlite 320, retinanet 1333x800; with "
                                           "--skip-training the size trained at].")),
    "epochs": (int | None, typer.Option(None, "--epochs", min=1,
                                        help="Supernet training epochs [ssdlite 60, "
                                             "retinanet 12].")),
    "batch_size": (int | None, typer.Option(None, "--batch-size", min=1,
                                            help="Global training batch [the finetune "
                                                 "recipe's].")),
    "lr": (float | None, typer.Option(None, "--lr", min=0.0,
                                      help="Base lr [the finetune recipe's, scaled to "
                                           "--batch-size].")),
    "optimizer": (str | None, typer.Option(None, "--optimizer", metavar="sgd|rmsprop",
                                           help="[ssdlite rmsprop, retinanet sgd]")),
    "momentum": (float, typer.Option(0.9, "--momentum", min=0.0)),
    "weight_decay": (float | None, typer.Option(None, "--weight-decay", min=0.0,
                                                help="[ssdlite 4e-5, retinanet 5e-5]")),
    "warmup_iters": (int | None, typer.Option(None, "--warmup-iters", min=0,
                                              help="Linear warm-up [min(500, 10% of the "
                                                   "steps)].")),
    "clip_grad": (float | None, typer.Option(None, "--clip-grad", min=0.0,
                                             help="Max gradient norm [retinanet 35]; 0 = off.")),
    "augment": (str | None, typer.Option(None, "--augment", metavar="ssd|ssdlite|flip|none",
                                         help="Training augmentation [ssdlite ssd, retinanet "
                                              "flip].")),
    "workers": (int, typer.Option(2, "--workers", min=0, help="Data-loading processes.")),
    "seed": (int, typer.Option(0, "--seed", help="Seed of paths, data order, populations.")),
    "device": (str, typer.Option("auto", "--device", metavar="auto|cpu|cuda",
                                 help="auto: CUDA when available.")),
    "checkpoint_every": (int, typer.Option(0, "--checkpoint-every", min=0, metavar="STEPS",
                                           help="Training state every STEPS steps (always "
                                                "after every epoch).")),
    "stop_after": (int | None, typer.Option(None, "--stop-after", min=1, metavar="STEPS",
                                            help="Stop training (checkpointed) after STEPS "
                                                 "steps of this run; continue with --resume.")),
    "resume": (bool, typer.Option(False, "--resume",
                                  help="Continue the training and the search where they "
                                       "stopped.")),
    "force": (bool, typer.Option(False, "--force", help="Overwrite outputs and start over.")),
    "as_json": (bool, typer.Option(False, "--json", help="Print a JSON summary on stdout.")),
    "latency_table": (str | None, typer.Option(None, "--latency-table", metavar="TABLE",
                                               help="Latency table from 'fnacli latency' (same "
                                                    "space, task, size): for --cost latency / "
                                                    "--max-latency, and reported beside MAdds; "
                                                    "--force accepts one measured on another "
                                                    "machine.")),
    # -- one-shot only ------------------------------------------------------------------------
    "skip_training": (bool, typer.Option(False, "--skip-training",
                                         help="SUPERNET is already trained one-shot (a "
                                              "--trained file): search it directly.")),
    "train_only": (bool, typer.Option(False, "--train-only",
                                      help="Train the one-shot supernet (to --trained) and "
                                           "stop; search it later with --skip-training.")),
    "trained": (str | None, typer.Option(None, "--trained", metavar="PATH",
                                         help="Where the trained supernet goes [OUT with "
                                              ".oneshot.safetensors].")),
    "population": (int, typer.Option(50, "--population", min=1,
                                     help="Candidates per generation (random: per batch).")),
    "parents": (int, typer.Option(10, "--parents", min=1,
                                  help="Top-k candidates that parent the next generation.")),
    "mutation_prob": (float, typer.Option(0.1, "--mutation-prob", min=0.0, max=1.0,
                                          help="Probability to resample each choice when "
                                               "mutating.")),
    "generations": (int, typer.Option(20, "--generations", min=1, help="Generations.")),
    "candidates": (int | None, typer.Option(None, "--candidates", min=1,
                                            help="random: architectures to evaluate "
                                                 "[population x generations].")),
    "max_madds": (str | None, typer.Option(None, "--max-madds", metavar="MADDS",
                                           help="MAdds limit of every candidate, detector "
                                                "included (e.g. 800M, 1.2G).")),
    "max_latency": (str | None, typer.Option(None, "--max-latency", metavar="TIME",
                                             help="Latency limit of every candidate by "
                                                  "--latency-table (e.g. 12ms, 800us).")),
    "metric": (str, typer.Option("AP", "--metric",
                                 help="Fitness: one of COCOeval's numbers (AP, AP50, AP75, "
                                      "APs, APm, APl, AR1, …).")),
    "calib_images": (int, typer.Option(256, "--calib-images", min=1,
                                       help="Training images for each candidate's BN "
                                            "recalibration.")),
    "calib_batch": (int, typer.Option(16, "--calib-batch", min=1,
                                      help="Batch size of BN recalibration and evaluation.")),
    "eval_images": (int | None, typer.Option(None, "--eval-images", min=1,
                                             help="Score on a fixed subset of N held-out "
                                                  "images [all].")),
    "record_top": (int, typer.Option(20, "--record-top", min=1,
                                     help="Best candidates listed in the output (derive "
                                          "--top).")),
    "stop_after_candidates": (int | None, typer.Option(None, "--stop-after-candidates",
                                                       min=1, metavar="N",
                                                       help="Stop the search after N "
                                                            "evaluations of this run; continue "
                                                            "with --resume.")),
}
ONESHOT_ONLY = ("skip_training", "train_only", "trained", "population", "parents",
                "mutation_prob", "generations", "candidates", "max_madds", "max_latency",
                "metric",
                "calib_images", "calib_batch", "eval_images", "record_top",
                "stop_after_candidates")


def defaults() -> dict[str, Any]:
    """Every option at its default (``...`` for the required ones)."""
    return {name: opt.default for name, (_, opt) in OPTIONS.items()}


def _files(output: str, trained: str | None) -> dict[str, Path]:
    out = Path(output)
    stem = out.with_suffix("") if out.suffix == ".safetensors" else out
    tr = Path(trained) if trained else Path(f"{stem}.oneshot.safetensors")
    return {"output": out, "trained": tr, "train_state": Path(f"{tr}.ckpt"),
            "train_metrics": Path(f"{tr}.metrics.jsonl"),
            "state": Path(f"{out}.search.json"), "history": Path(f"{out}.history.jsonl")}


def run_oneshot_search(**options: Any) -> dict:
    """Train the one-shot supernet (unless ``skip_training``), then search it; options as
    in ``OPTIONS`` plus ``strategy``. Returns the summary it printed."""
    o = defaults() | options
    unknown = sorted(set(o) - set(OPTIONS) - {"strategy"})
    if unknown:
        raise TypeError(f"unknown options {unknown}")
    strategy = o.get("strategy") or "evolution"
    if strategy not in STRATEGIES:
        fail(f"--strategy: expected one of {', '.join(STRATEGIES)} here, got {strategy!r}")
    checkpoint_output(o["output"])
    if o["skip_training"] and o["train_only"]:
        fail("--skip-training and --train-only exclude each other")
    if o["device"] not in ("auto", "cpu", "cuda"):
        fail(f"--device: expected auto, cpu or cuda, got {o['device']!r}")

    from fnacli.cli.finetune import setup_logging
    from fnacli.detection.evaluate import STAT_NAMES
    from fnacli.train import init_distributed, shutdown_distributed

    if o["metric"] not in STAT_NAMES:
        fail(f"--metric: expected one of {', '.join(STAT_NAMES)}, got {o['metric']!r}")
    _check_latency_options(o)

    env = init_distributed(None if o["device"] == "auto" else o["device"])
    setup_logging(env.is_main)
    try:
        summary = _run(o, strategy, env)
    finally:
        shutdown_distributed(env)
    if env.is_main:
        if o["as_json"]:
            print_result(json.dumps(summary))
        else:
            print_result(summary["message"])
    return summary


def _check_latency_options(o: dict) -> None:
    """--max-latency / --latency-table refused before any work."""
    from fnacli.latency import parse_latency, read_latency_table

    if o["max_latency"] is not None:
        parse_latency(o["max_latency"], "--max-latency")
        if not o["latency_table"]:
            fail("--max-latency needs --latency-table TABLE (measure one with 'fnacli "
                 "latency')")
    if o["latency_table"]:
        read_latency_table(o["latency_table"], o["force"])


def _run(o: dict, strategy: str, env: Any) -> dict:
    from fnacli.io import check_writable

    files = _files(o["output"], o["trained"])
    again = o["force"] or o["resume"]
    if not o["train_only"]:
        check_writable(files["output"], again)  # fail before the slow part
        for p in (files["state"], files["history"]):
            if p.exists() and not again:
                fail(f"{p}: exists from an earlier search (continue it with --resume, or "
                     "start over with --force)")
    if o["skip_training"]:
        trained = Path(o["supernet"])
    else:
        trained = files["trained"]
        if o["resume"] and trained.is_file() and not files["train_state"].is_file():
            err_console.print(f"{trained}: already trained, going on with the search")
        else:
            result = _train(o, files, env)
            if not result.finished:
                return {"message": f"training stopped after {result.steps} steps; continue with "
                                   "--resume", "trained": None, "steps": result.steps,
                        "finished": False}
            if env.is_main:
                files["train_state"].unlink(missing_ok=True)  # done: resume goes to the search
        if o["train_only"]:
            return {"message": f"{trained}: one-shot supernet trained", "trained": str(trained),
                    "finished": True}
    from fnacli.train import barrier

    # decided by every process before rank 0 may write a fresh search state (after the barrier)
    resume = o["resume"] and files["state"].is_file()
    barrier(env)
    return _search(o, strategy, trained, files, env, resume)


def _train(o: dict, files: dict[str, Path], env: Any) -> Any:
    from fnacli.cli.finetune import RECIPES, parse_size
    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.models import TASKS, label_offset
    from fnacli.detection.transforms import DEFAULT_AUGMENT, train_transform
    from fnacli.io import check_writable
    from fnacli.search.oneshot import OneshotInfo, train_oneshot
    from fnacli.search.supernet_io import read_supernet
    from fnacli.train import TrainConfig

    ckpt = read_supernet(o["supernet"])
    info = OneshotInfo.from_meta(ckpt.meta, o["supernet"])
    task = o["task"] or (info.task if info else None)
    if task is None:
        fail("--task: needed to train the one-shot supernet (ssdlite or retinanet)")
    if task not in TASKS:
        fail(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    resume = o["resume"] and files["train_state"].is_file()
    if not resume and files["trained"].exists() and not o["force"]:
        fail(f"{files['trained']}: a trained supernet is already there: search it with "
             "--skip-training, or train again with --force")
    check_writable(files["trained"], True)  # its folder must exist
    recipe = RECIPES[task]
    size = parse_size(o["size"]) if o["size"] else recipe["size"]
    batch = o["batch_size"] or recipe["batch_size"]
    lr = o["lr"] if o["lr"] is not None else recipe["lr"] * batch / recipe["base_batch"]
    epochs = o["epochs"] or ONESHOT_EPOCHS[task]
    augment = o["augment"] or DEFAULT_AUGMENT[task]
    files_train = find_split(o["data"], "train", o["train_ann"], o["train_images"])
    dataset = load_split(files_train, train=True, label_offset=label_offset(task),
                         transform=train_transform(augment), seed=o["seed"])
    steps = epochs * (len(dataset) // batch)
    warmup = (o["warmup_iters"] if o["warmup_iters"] is not None
              else min(recipe["warmup_iters"], steps // 10))
    clip = o["clip_grad"] if o["clip_grad"] is not None else recipe["clip_grad"]
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr,
                      optimizer=o["optimizer"] or recipe["optimizer"], momentum=o["momentum"],
                      weight_decay=(o["weight_decay"] if o["weight_decay"] is not None
                                    else recipe["weight_decay"]),
                      schedule=recipe["schedule"], milestones=recipe["milestones"],
                      warmup_iters=warmup, clip_grad=clip or None, seed=o["seed"],
                      workers=o["workers"], checkpoint_every=o["checkpoint_every"])
    if env.is_main:
        err_console.print(f"one-shot supernet training: {task} at {size[0]}x{size[1]}, "
                          f"{len(dataset)} images, {epochs} epochs of {len(dataset) // batch} "
                          f"steps, uniform single-path sampling")
    return train_oneshot(ckpt, o["supernet"], dataset, task, size, cfg, env, files["trained"],
                         state_path=files["train_state"],
                         metrics_path=files["train_metrics"], resume=resume,
                         stop_after=o["stop_after"], force=o["force"] or o["resume"],
                         log=err_console.print if env.is_main else None)


def _search(o: dict, strategy: str, trained: Path, files: dict[str, Path], env: Any,
            resume: bool) -> dict:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.cli.finetune import parse_size
    from fnacli.detection.data import check_same_categories, find_split, load_split
    from fnacli.detection.models import label_offset
    from fnacli.lut import load_or_build_lut
    from fnacli.search import evolution as E
    from fnacli.search.bn_recal import calibration_subset
    from fnacli.search.oneshot import (
        PathEvaluator,
        build_oneshot_detector,
        distributed_evaluate,
        load_trained,
    )

    ckpt, info = load_trained(trained)
    if o["task"] and o["task"] != info.task:
        fail(f"--task {o['task']}: {trained} was trained one-shot for {info.task}")
    task = info.task
    size = parse_size(o["size"]) if o["size"] else info.size
    from fnacli.latency import parse_latency, search_latency_table

    max_latency = parse_latency(o["max_latency"], "--max-latency") if o["max_latency"] else None
    cfg = E.SearchConfig(strategy=strategy, population=o["population"], parents=o["parents"],
                         mutation_prob=o["mutation_prob"], generations=o["generations"],
                         candidates=o["candidates"],
                         max_madds=E.parse_madds(o["max_madds"]) if o["max_madds"] else None,
                         max_latency=max_latency, metric=o["metric"], seed=o["seed"])
    latency = (search_latency_table(o["latency_table"], ckpt.space, task, size, info.num_classes,
                                    o["force"]) if o["latency_table"] else None)
    offset = label_offset(task)
    val = load_split(find_split(o["data"], "val", o["val_ann"], o["val_images"]), train=False,
                     label_offset=offset)
    check_same_categories(info.categories, val.categories(), str(trained), str(val.files.ann))
    if o["eval_images"]:
        val = calibration_subset(val, o["eval_images"], o["seed"])
    train = load_split(find_split(o["data"], "train", o["train_ann"], o["train_images"]),
                       train=True, label_offset=offset)
    calib = calibration_subset(train, o["calib_images"], o["seed"])
    detector, supernet = build_oneshot_detector(ckpt, task, info.num_classes, size, str(trained))
    lut = load_or_build_lut(ckpt.space, task, size, info.num_classes, progress=env.is_main)
    enc = E.Encoding(ckpt.space)
    score = PathEvaluator(detector, supernet, enc, calib, val, o["calib_batch"], o["workers"],
                          env.device)
    identity = {"supernet": str(trained), "task": task, "size": list(size),
                "calib_images": len(calib), "eval_images": len(val)}
    if latency is not None:
        identity["latency_table"] = latency.identity()
    search = E.OneShotSearch(enc, lut.arch_madds, distributed_evaluate(score, env), cfg,
                             files["state"], files["history"], chunk=env.world,
                             write=env.is_main, identity=identity,
                             latency=latency.latency_ms if latency is not None else None)
    if env.is_main:
        limit = f" within {E.format_madds(cfg.max_madds)} MAdds" if cfg.max_madds else ""
        limit += f" within {cfg.max_latency:g} ms" if cfg.max_latency else ""
        err_console.print(f"{strategy} search on {trained}: {cfg.total_candidates} candidates"
                          f"{limit}, fitness {cfg.metric} on {len(val)} held-out images, BN "
                          f"recalibrated on {len(calib)} training images")
    with _SearchProgress(cfg, env.is_main) as progress:
        search.on_candidate = progress.candidate
        search.on_round = progress.round
        result = search.run(resume=resume, stop_after=o["stop_after_candidates"])
    if not search.cache:
        fail("the search evaluated no architecture")
    ranked = search.ranked()
    best = ranked[0]
    summary = {"strategy": strategy, "metric": cfg.metric, "best_fitness": best.fitness,
               "best_madds": best.madds, "best_arch": enc.arch(best.genome).to_dict(),
               "evaluated": len(ranked), "rounds": result.rounds, "finished": result.finished,
               "output": None}
    if latency is not None:
        summary["best_latency_ms"] = latency.latency_ms(enc.arch(best.genome))
    if not result.finished:
        summary["message"] = (f"search stopped after {len(ranked)} evaluations; continue with "
                              "--resume")
        return summary
    if env.is_main:
        tensors = dict(ckpt.weights)
        tensors.update(E.arch_logits(enc, best.genome))
        meta = {k: v for k, v in ckpt.meta.items() if k != "search"}
        meta["search"] = {"strategy": strategy, "task": task, "size": list(size),
                          **{k: v for k, v in cfg.identity().items() if k != "strategy"},
                          "num_classes": info.num_classes, "categories": info.categories,
                          "generations": cfg.generations, "candidates": cfg.total_candidates,
                          "rounds": result.rounds, "evaluated": len(ranked),
                          "calib_images": len(calib), "eval_images": len(val),
                          "supernet": str(trained), "finished": True,
                          "derived": summary["best_arch"],
                          "top": E.candidates_meta(ranked[:o["record_top"]], enc)}
        save_checkpoint(files["output"], tensors, "searched", meta,
                        force=o["force"] or o["resume"])
    summary["output"] = str(files["output"])
    lat = (f", {summary['best_latency_ms']:.2f} ms predicted" if latency is not None else "")
    summary["message"] = (f"{files['output']}: best {cfg.metric} {best.fitness:.4f} at "
                          f"{E.format_madds(best.madds)} MAdds{lat} ({strategy}, {len(ranked)} "
                          f"architectures evaluated)")
    return summary


class _SearchProgress:
    """Candidates on the training loop's progress bar, one line per generation (rank 0)."""

    def __init__(self, cfg: Any, enabled: bool) -> None:
        from fnacli.train import TrainProgress

        self.cfg = cfg
        self.bar = TrainProgress(cfg.total_candidates, 0, cfg.strategy, enabled)

    def __enter__(self) -> _SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def candidate(self, c: Any, reused: bool) -> None:
        self.bar.update(f"last {self.cfg.metric} {c.fitness:.4f}")

    def round(self, r: dict) -> None:
        from fnacli.search.evolution import format_madds

        if r["event"] == "stop":
            self.bar.log(f"stopped early: {r['reason']}")
            return
        if r["event"] == "resume":
            self.bar.update(f"resumed after generation {r['generation']}", r["evaluated"])
            return
        m = self.cfg.metric
        self.bar.log(
            f"generation {r['generation'] + 1}/{self.cfg.rounds}: best {m} {r['best']:.4f} "
            f"({format_madds(r['best_madds'])} MAdds), median {r['median']:.4f} "
            f"({format_madds(r['median_madds'])}); overall best {r['top_fitness']:.4f} "
            f"({format_madds(r['top_madds'])}); {r['evaluated']} evaluated")
