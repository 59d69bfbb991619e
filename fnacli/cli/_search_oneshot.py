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
# schedule (12 epochs); for SSDLite its 60-epoch fine-tuning recipe.
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
                                         help="Reporting split (what 'fnacli eval' reports "
                                              "on): one-shot fitness images may not be in it.")),
    "val_images": (str | None, typer.Option(None, "--val-images", metavar="DIR",
                                            help="Reporting split's images.")),
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
    "cost_scope": (str | None, typer.Option(None, "--cost-scope",
                                            metavar="blocks|backbone|detector",
                                            help="What the MAdds cost counts: the searched "
                                                 "blocks, the whole backbone or the whole "
                                                 "detector [differentiable: blocks (the cost "
                                                 "term, as FNA/Jung et al.); evolution/random: "
                                                 "backbone (--max-madds, as DetNAS)].")),
    "cost_size": (str | None, typer.Option(None, "--cost-size", metavar="N|WxH",
                                           help="Input size MAdds are counted at [retinanet "
                                                "1088x800 as FNA/Jung et al. report it, "
                                                "ssdlite --size].")),
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
                                           help="MAdds limit of every candidate (e.g. 300M, "
                                                "1.2G), on the backbone as DetNAS (or "
                                                "what --cost-scope says).")),
    "fitness_images": (str | None, typer.Option(None, "--fitness-images", metavar="N|FRACTION",
                                                help="Fitness images held out of the training "
                                                     "split (a count, or a fraction below 1); "
                                                     "the supernet trains on the rest [min(5000, "
                                                     "20%)].")),
    "fitness_ann": (str | None, typer.Option(None, "--fitness-ann", metavar="JSON",
                                             help="An explicit fitness annotation file instead "
                                                  "(its images are left out of supernet "
                                                  "training).")),
    "fitness_img_dir": (str | None, typer.Option(None, "--fitness-img-dir", metavar="DIR",
                                                 help="Images of --fitness-ann.")),
    "retrain": (int | None, typer.Option(None, "--retrain", min=1, metavar="N",
                                         help="random only: DetNAS's random baseline. Draw N "
                                              "architectures uniformly under --max-madds and "
                                              "write their specs into the folder -o, to be "
                                              "fine-tuned with the searched one's settings "
                                              "(no supernet training, no fitness).")),
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
                "mutation_prob", "generations", "candidates", "max_madds", "metric",
                "calib_images", "calib_batch", "eval_images", "record_top",
                "stop_after_candidates", "fitness_images", "fitness_ann", "fitness_img_dir",
                "retrain")
ONESHOT_COST_SCOPE = "backbone"  # DetNAS constrains the backbone's FLOPs


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
    if o["retrain"] is not None and strategy != "random":
        fail("--retrain: DetNAS's random baseline needs --strategy random")
    if o["fitness_img_dir"] and not o["fitness_ann"]:
        fail("--fitness-img-dir needs --fitness-ann")
    if o["fitness_ann"] and o["fitness_images"]:
        fail("--fitness-images and --fitness-ann exclude each other")
    from fnacli.lut import check_scope
    from fnacli.search.fitness_data import parse_amount

    check_scope(o["cost_scope"] or ONESHOT_COST_SCOPE)
    parse_amount(o["fitness_images"])
    if o["retrain"] is not None:
        summary = random_baseline(o)
        print_result(json.dumps(summary) if o["as_json"] else summary["message"])
        return summary
    if o["device"] not in ("auto", "cpu", "cuda"):
        fail(f"--device: expected auto, cpu or cuda, got {o['device']!r}")

    from fnacli.cli.finetune import setup_logging
    from fnacli.detection.evaluate import STAT_NAMES
    from fnacli.train import init_distributed, shutdown_distributed

    if o["metric"] not in STAT_NAMES:
        fail(f"--metric: expected one of {', '.join(STAT_NAMES)}, got {o['metric']!r}")

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
    dataset, fitness = _hold_out_fitness(o, dataset, task)
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
                          f"{len(dataset)} images ({fitness['images']} held out for fitness), "
                          f"{epochs} epochs of {len(dataset) // batch} steps, uniform "
                          f"single-path sampling")
    return train_oneshot(ckpt, o["supernet"], dataset, task, size, cfg, env, files["trained"],
                         fitness=fitness, state_path=files["train_state"],
                         metrics_path=files["train_metrics"], resume=resume,
                         stop_after=o["stop_after"], force=o["force"] or o["resume"],
                         log=err_console.print if env.is_main else None)


def _search(o: dict, strategy: str, trained: Path, files: dict[str, Path], env: Any,
            resume: bool) -> dict:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.cli.finetune import parse_size
    from fnacli.detection.data import check_same_categories
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
    cfg = E.SearchConfig(strategy=strategy, population=o["population"], parents=o["parents"],
                         mutation_prob=o["mutation_prob"], generations=o["generations"],
                         candidates=o["candidates"],
                         max_madds=E.parse_madds(o["max_madds"]) if o["max_madds"] else None,
                         metric=o["metric"], seed=o["seed"])
    fit_set, calib_pool, fitness = _fitness_sets(o, info, task)
    check_same_categories(info.categories, fit_set.categories(), str(trained),
                          str(fit_set.files.ann))
    if o["eval_images"]:
        fit_set = calibration_subset(fit_set, o["eval_images"], o["seed"])
    calib = calibration_subset(calib_pool, o["calib_images"], o["seed"])
    scope = o["cost_scope"] or ONESHOT_COST_SCOPE
    cost_size = _cost_size(o, task, size)
    detector, supernet = build_oneshot_detector(ckpt, task, info.num_classes, size, str(trained))
    lut = load_or_build_lut(ckpt.space, task, cost_size, info.num_classes,
                            progress=env.is_main)
    enc = E.Encoding(ckpt.space)
    score = PathEvaluator(detector, supernet, enc, calib, fit_set, o["calib_batch"],
                          o["workers"], env.device)
    identity = {"supernet": str(trained), "task": task, "size": list(size),
                "calib_images": len(calib), "eval_images": len(fit_set),
                "cost_scope": scope, "cost_size": list(cost_size), "fitness": fitness}

    def cost(arch: Any) -> float:
        return lut.arch_cost(arch, scope)

    search = E.OneShotSearch(enc, cost, distributed_evaluate(score, env), cfg,
                             files["state"], files["history"], chunk=env.world,
                             write=env.is_main, identity=identity)
    if env.is_main:
        limit = (f" within {E.format_madds(cfg.max_madds)} MAdds ({scope} at "
                 f"{cost_size[0]}x{cost_size[1]})" if cfg.max_madds else "")
        err_console.print(f"{strategy} search on {trained}: {cfg.total_candidates} candidates"
                          f"{limit}, fitness {cfg.metric} on {len(fit_set)} images "
                          f"({fitness['source']}), BN recalibrated on {len(calib)} training "
                          f"images")
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
                          "calib_images": len(calib), "eval_images": len(fit_set),
                          "cost_scope": scope, "cost_size": list(cost_size),
                          "fitness": {k: v for k, v in fitness.items() if k != "ids"},
                          "supernet": str(trained), "finished": True,
                          "derived": summary["best_arch"],
                          "top": E.candidates_meta(ranked[:o["record_top"]], enc)}
        save_checkpoint(files["output"], tensors, "searched", meta,
                        force=o["force"] or o["resume"])
    summary["output"] = str(files["output"])
    summary["message"] = (f"{files['output']}: best {cfg.metric} {best.fitness:.4f} at "
                          f"{E.format_madds(best.madds)} MAdds ({strategy}, {len(ranked)} "
                          f"architectures evaluated)")
    return summary


def _cost_size(o: dict, task: str, size: tuple[int, int]) -> tuple[int, int]:
    from fnacli.cli.finetune import parse_size
    from fnacli.search.differentiable import default_cost_size

    if o["cost_size"]:
        return parse_size(o["cost_size"], "--cost-size")
    return default_cost_size(task, size)


def _reporting_split(o: dict, offset: int) -> Any:
    """The split 'fnacli eval' reports on (val), or None when the data has none."""
    from fnacli.detection.data import find_split, load_split
    from fnacli.errors import UserError

    try:
        files = find_split(o["data"], "val", o["val_ann"], o["val_images"])
    except UserError:
        if o["val_ann"] or o["val_images"]:
            raise
        return None
    return load_split(files, train=False, label_offset=offset)


def _hold_out_fitness(o: dict, train: Any, task: str) -> tuple[Any, dict]:
    """DetNAS's split before supernet training: the training images minus the fitness ones,
    and what to record about the fitness set (fnacli.search.fitness_data)."""
    from fnacli.detection.data import load_split
    from fnacli.detection.models import label_offset
    from fnacli.search import fitness_data as FD

    offset = label_offset(task)
    report = _reporting_split(o, offset)
    if o["fitness_ann"]:
        fit = load_split(FD.fitness_files(o["fitness_ann"], o["fitness_img_dir"]),
                         train=False, label_offset=offset)
        FD.check_not_reporting(fit, report, o["force"])
        rest = FD.without_files(train, fit)
        if len(rest) == 0:
            fail(f"{o['fitness_ann']}: every training image is a fitness image")
        return rest, {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
    ids = FD.holdout_ids(train, FD.parse_amount(o["fitness_images"]), o["seed"])
    fit = FD.only_ids(load_split(train.files, train=False, label_offset=offset), ids)
    FD.check_not_reporting(fit, report, o["force"])
    return FD.without_ids(train, ids), {"source": "train", "ann": str(train.files.ann),
                                        "images": len(ids), "seed": o["seed"], "ids": ids}


def _fitness_sets(o: dict, info: Any, task: str) -> tuple[Any, Any, dict]:
    """(fitness set, training images for BN calibration, fitness record) of a search: the
    trained supernet's held-out images when it recorded them, else as the options say."""
    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.models import label_offset
    from fnacli.search import fitness_data as FD

    offset = label_offset(task)
    report = _reporting_split(o, offset)
    train = load_split(find_split(o["data"], "train", o["train_ann"], o["train_images"]),
                       train=True, label_offset=offset)
    recorded = info.trained.get("fitness") or {}
    if o["fitness_ann"]:
        fit = load_split(FD.fitness_files(o["fitness_ann"], o["fitness_img_dir"]),
                         train=False, label_offset=offset)
        record = {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
        calib = FD.without_files(train, fit)
    else:
        if recorded.get("source") == "train" and o["fitness_images"] is None:
            ids = [int(i) for i in recorded["ids"]]
        else:
            if recorded and o["fitness_images"] is not None:
                err_console.print("warning: --fitness-images differs from the supernet's "
                                  "training, whose held-out images are not these")
            ids = FD.holdout_ids(train, FD.parse_amount(o["fitness_images"]), o["seed"])
        fit = FD.only_ids(load_split(train.files, train=False, label_offset=offset), ids)
        record = {"source": "train", "ann": str(train.files.ann), "images": len(ids),
                  "seed": int(recorded.get("seed", o["seed"])), "ids": ids}
        calib = FD.without_ids(train, ids)
    FD.check_not_reporting(fit, report, o["force"])
    return fit, calib, record


def random_baseline(o: dict) -> dict:
    """DetNAS's random baseline: N architectures drawn uniformly from the space of SUPERNET
    under --max-madds, written as specs into the folder -o (fine-tune each with the searched
    architecture's settings; recipes/detnas_random_baseline.sh does)."""
    from fnacli.detection.models import TASKS
    from fnacli.io import write_text_atomic
    from fnacli.lut import load_or_build_lut
    from fnacli.search import evolution as E
    from fnacli.search.supernet_io import read_supernet

    task = o["task"]
    if task not in TASKS:
        fail(f"--task: expected one of {', '.join(TASKS)} (needed to count MAdds)")
    out = Path(o["output"])
    if out.exists() and not out.is_dir():
        fail(f"{out}: --retrain writes a folder of specs; this is a file")
    if (out / "baseline.json").exists() and not o["force"]:
        fail(f"{out}/baseline.json: exists (use --force to draw again)")
    ckpt = read_supernet(o["supernet"])
    size = _cost_size(o, task, _task_size(o, task))
    scope = o["cost_scope"] or ONESHOT_COST_SCOPE
    lut = load_or_build_lut(ckpt.space, task, size, progress=True)
    limit = E.parse_madds(o["max_madds"]) if o["max_madds"] else None
    enc = E.Encoding(ckpt.space)
    picks = E.random_baseline(enc, lambda a: lut.arch_cost(a, scope), o["retrain"], limit,
                              o["seed"])
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (genome, madds) in enumerate(picks, start=1):
        path = out / f"random-{k}.json"
        write_text_atomic(path, enc.arch(genome).to_json())
        entries.append({"spec": str(path), "madds": madds,
                        "detector_madds": lut.arch_madds(enc.arch(genome))})
    doc = {"strategy": "random-baseline", "task": task, "space": ckpt.space.name,
           "max_madds": limit, "cost_scope": scope, "cost_size": list(size),
           "seed": o["seed"], "architectures": entries}
    write_text_atomic(out / "baseline.json", json.dumps(doc, indent=2) + "\n")
    return {**doc, "output": str(out),
            "message": f"{out}: {len(entries)} random architectures of the space"
                       + (f" within {E.format_madds(limit)} MAdds ({scope})" if limit else "")
                       + "; fine-tune each with the searched architecture's settings"}


def _task_size(o: dict, task: str) -> tuple[int, int]:
    from fnacli.cli.finetune import RECIPES, parse_size

    return parse_size(o["size"]) if o["size"] else RECIPES[task]["size"]


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
