"""`fnacli search SUPERNET --task … --data DIR -o SEARCHED`: architecture search.

``--strategy differentiable`` (default): FNA's alternating weight / α-β optimisation with a
MAdds cost (``fnacli.search.differentiable``). ``evolution`` / ``random``: DetNAS's one-shot
search (``fnacli.cli._search_oneshot``). Both share the data, recipe and run options; the
strategy-specific ones are refused with the other strategy.

Files beside SEARCHED: SEARCHED.ckpt (training state, --resume) and SEARCHED.metrics.jsonl
(JSON lines: training steps, α/β steps, and α/β probabilities per epoch), SEARCHED.arch.svg
(those probabilities and the MAdds over the epochs, as a picture). SEARCHED itself is
rewritten after every epoch, so 'fnacli derive' works on a search in progress.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import typer

from fnacli.cli import _search_oneshot as oneshot
from fnacli.cli.app import app
from fnacli.cli.common import checkpoint_output, err_console, fail, print_result

STRATEGIES = ("differentiable", *oneshot.STRATEGIES)

# Options of the differentiable search only (name -> (type, typer option)).
DIFF_OPTIONS: dict[str, tuple[Any, Any]] = {
    "warmup_epochs": (int | None, typer.Option(None, "--warmup-epochs", min=0,
                                               help="Epochs of weight steps on uniform paths "
                                                    "before α/β move [ssdlite 15 of 30, "
                                                    "retinanet 8 of 14: that share of "
                                                    "--epochs]; differentiable only.")),
    "arch_every": (int | None, typer.Option(None, "--arch-every", min=1, metavar="K",
                                            help="Weight steps per α/β step [ssdlite 5, "
                                                 "retinanet 1].")),
    "cost_form": (str, typer.Option("log", "--cost-form", metavar="log|linear",
                                    help="Cost term: FNA's λ·log_τ(C) or Jung et al.'s λ·C "
                                         "(C = expected GMAdds of the detector).")),
    "lam": (float | None, typer.Option(None, "--lambda", min=0.0,
                                       help="Cost weight λ [log: ssdlite 0.15, retinanet 0.02; "
                                            "linear: matched to the log form at the start].")),
    "tau": (float, typer.Option(10.0, "--tau", help="Log base τ of the log cost.")),
    "target_madds": (str | None, typer.Option(None, "--target-madds", metavar="MADDS",
                                              help="Budget (e.g. 800M, 1.2G): the cost term "
                                                   "penalises only the excess over it.")),
    "cost": (str, typer.Option("madds", "--cost", metavar="madds|latency",
                               help="What the cost term counts: the detector's MAdds, or its "
                                    "latency by --latency-table (ms).")),
    "target_latency": (str | None, typer.Option(None, "--target-latency", metavar="TIME",
                                                help="With --cost latency: a budget (e.g. "
                                                     "12ms); only the excess is penalised.")),
    "min_depth": (int, typer.Option(0, "--min-depth", min=0, metavar="N",
                                    help="Layers 0..N-1 of every stage may not be skipped "
                                         "(against collapse to all-skip).")),
    "arch_lr": (float, typer.Option(3e-4, "--arch-lr", min=0.0,
                                    help="Adam lr of α/β (betas 0.5/0.999, wd 1e-3).")),
}

# Shared options whose help must speak for both strategies.
_SHARED_HELP = {
    "epochs": typer.Option(None, "--epochs", min=1,
                           help="Epochs [differentiable: ssdlite 30, retinanet 14; one-shot "
                                "supernet training: ssdlite 60, retinanet 12]."),
    "output": typer.Option(..., "--output", "-o", metavar="SEARCHED",
                           help="Output searched checkpoint (.safetensors); SEARCHED.ckpt and "
                                "SEARCHED.metrics.jsonl go beside it."),
}


def _options() -> list[inspect.Parameter]:
    params = []
    for name, (annotation, opt) in oneshot.OPTIONS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default=_SHARED_HELP.get(name, opt),
                                        annotation=annotation))
    params.insert(1, inspect.Parameter(
        "strategy", inspect.Parameter.KEYWORD_ONLY, annotation=str,
        default=typer.Option("differentiable", "--strategy",
                             metavar="differentiable|evolution|random",
                             help="differentiable (FNA, default) or one-shot (DetNAS).")))
    for name, (annotation, opt) in DIFF_OPTIONS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                        annotation=annotation))
    return params


def search(**o: Any) -> None:
    strategy = o.pop("strategy")
    if strategy not in STRATEGIES:
        fail(f"--strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    diff = {k: o.pop(k) for k in DIFF_OPTIONS}
    if strategy != "differentiable":
        _refuse(diff, {k: opt.default for k, (_, opt) in DIFF_OPTIONS.items()}, DIFF_OPTIONS,
                strategy)
        oneshot.run_oneshot_search(strategy=strategy, **o)
        return
    defaults = oneshot.defaults()
    _refuse({k: o[k] for k in oneshot.ONESHOT_ONLY}, defaults,
            {k: oneshot.OPTIONS[k] for k in oneshot.ONESHOT_ONLY}, strategy)
    run_differentiable({k: v for k, v in o.items() if k not in oneshot.ONESHOT_ONLY} | diff)


def _refuse(given: dict, defaults: dict, options: dict, strategy: str) -> None:
    for k, v in given.items():
        if v != defaults[k]:
            flag = options[k][1].param_decls[0]
            fail(f"{flag} does not apply to --strategy {strategy}")


search.__signature__ = inspect.Signature(_options())  # type: ignore[attr-defined]
search.__annotations__ = {p.name: p.annotation for p in _options()}
app.command("search", help="Search an architecture on a detection task: FNA's differentiable "
                           "search (default) or DetNAS's one-shot evolution/random search.")(search)


def run_differentiable(o: dict) -> dict:
    """The differentiable search with the CLI's options (see ``search``); returns the summary."""
    from fnacli.cli.finetune import setup_logging
    from fnacli.train import init_distributed, shutdown_distributed

    checkpoint_output(o["output"])
    if o["device"] not in ("auto", "cpu", "cuda"):
        fail(f"--device: expected auto, cpu or cuda, got {o['device']!r}")
    env = init_distributed(None if o["device"] == "auto" else o["device"])
    setup_logging(env.is_main)
    try:
        summary = _run(o, env)
    finally:
        shutdown_distributed(env)
    if env.is_main:
        print_result(json.dumps(summary) if o["as_json"] else summary["message"])
    return summary


def _run(o: dict, env: Any) -> dict:
    from fnacli.cli.finetune import RECIPES, parse_size
    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.models import TASKS, label_offset
    from fnacli.detection.transforms import DEFAULT_AUGMENT, train_transform
    from fnacli.io import check_writable
    from fnacli.search.differentiable import (
        SEARCH_DEFAULTS,
        SearchConfig,
        default_warmup_epochs,
        run_search,
    )
    from fnacli.search.evolution import format_madds, parse_madds
    from fnacli.search.supernet_io import read_supernet
    from fnacli.train import TrainConfig

    output = Path(o["output"])
    state_path, metrics_path = Path(f"{output}.ckpt"), Path(f"{output}.metrics.jsonl")
    if o["resume"]:
        if not state_path.exists():
            fail(f"{state_path}: no search state to resume from (run without --resume)")
    else:
        if not o["force"]:
            for p in (state_path, metrics_path):
                if p.exists():
                    fail(f"{p}: exists from an earlier run (continue it with --resume, or "
                         "start over with --force)")
        check_writable(output, o["force"])
    from fnacli.latency import parse_latency, read_latency_table, search_latency_table

    target_latency = (parse_latency(o["target_latency"], "--target-latency")
                      if o["target_latency"] is not None else None)
    if o["cost"] not in ("madds", "latency"):
        fail(f"--cost: expected madds or latency, got {o['cost']!r}")
    if o["cost"] == "latency" and not o["latency_table"]:
        fail("--cost latency needs --latency-table TABLE (measure one with 'fnacli latency')")
    if target_latency is not None and o["cost"] != "latency":
        fail("--target-latency goes with --cost latency")
    if o["target_madds"] is not None and o["cost"] != "madds":
        fail("--target-madds goes with --cost madds (use --target-latency)")
    if o["latency_table"]:
        read_latency_table(o["latency_table"], o["force"])  # refused before any work
    ckpt = read_supernet(o["supernet"])
    task = o["task"]
    if task is None:
        fail("--task: required (ssdlite or retinanet)")
    if task not in TASKS:
        fail(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    target = None
    if o["target_madds"] is not None:
        try:
            target = parse_madds(o["target_madds"])
        except Exception as e:  # noqa: BLE001 - its message names --max-madds
            fail(str(e).replace("--max-madds", "--target-madds"))
    recipe, d = RECIPES[task], SEARCH_DEFAULTS[task]
    size = parse_size(o["size"]) if o["size"] else recipe["size"]
    batch = o["batch_size"] or recipe["batch_size"]
    epochs = o["epochs"] or d["epochs"]
    warmup_epochs = (o["warmup_epochs"] if o["warmup_epochs"] is not None
                     else default_warmup_epochs(task, epochs))
    augment = o["augment"] or DEFAULT_AUGMENT[task]
    train_files = find_split(o["data"], "train", o["train_ann"], o["train_images"])
    dataset = load_split(train_files, train=True, label_offset=label_offset(task),
                         transform=train_transform(augment), seed=o["seed"])
    steps = epochs * (len(dataset) // 2 // batch)
    clip = o["clip_grad"] if o["clip_grad"] is not None else recipe["clip_grad"]
    tc = TrainConfig(
        epochs=epochs, batch_size=batch,
        lr=o["lr"] if o["lr"] is not None else recipe["lr"] * batch / recipe["base_batch"],
        optimizer=o["optimizer"] or recipe["optimizer"], momentum=o["momentum"],
        weight_decay=(o["weight_decay"] if o["weight_decay"] is not None
                      else recipe["weight_decay"]),
        schedule="step", milestones=d["milestones"],
        warmup_iters=(o["warmup_iters"] if o["warmup_iters"] is not None
                      else min(500, steps // 10)),
        clip_grad=clip or None, seed=o["seed"], workers=o["workers"],
        checkpoint_every=o["checkpoint_every"])
    table = (search_latency_table(o["latency_table"], ckpt.space, task, size,
                                  dataset.num_classes, o["force"])
             if o["latency_table"] else None)
    cfg = SearchConfig(task=task, size=size, train=tc, warmup_epochs=warmup_epochs,
                       arch_every=o["arch_every"] or d["arch_every"], cost_form=o["cost_form"],
                       lam=o["lam"], tau=o["tau"], target_madds=target,
                       min_depth=o["min_depth"], arch_lr=o["arch_lr"], augment=augment,
                       cost=o["cost"], target_latency=target_latency, latency_table=table)
    cfg.check()
    result = run_search(ckpt, o["supernet"], dataset, cfg, env, output, state_path=state_path,
                        metrics_path=metrics_path, resume=o["resume"],
                        stop_after=o["stop_after"],
                        log=err_console.print if env.is_main else None)
    summary = {"output": str(output), "strategy": "differentiable", "task": task,
               "steps": result.steps, "arch_steps": result.arch_steps,
               "epochs": result.epochs, "finished": result.finished,
               "derived": result.arch.to_dict(), "madds": result.madds,
               "expected_madds": result.expected_madds, "warning": result.warning}
    if table is not None:
        summary["latency_ms"] = result.latency_ms
        summary["expected_latency_ms"] = result.expected_latency_ms
    if result.warning and env.is_main:
        err_console.print(f"warning: {result.warning}")
    if not result.finished:
        summary["message"] = (f"search stopped after {result.steps} steps; state in "
                              f"{state_path} (continue with --resume)")
        return summary
    if env.is_main:
        state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    summary["message"] = (f"{output}: searched {task} ({result.steps} weight steps, "
                          f"{result.arch_steps} α/β steps); derived architecture "
                          f"{format_madds(result.madds)} MAdds (expected "
                          f"{format_madds(result.expected_madds)})"
                          + (f", {result.latency_ms:.2f} ms predicted (expected "
                             f"{result.expected_latency_ms:.2f} ms)" if table is not None
                             else ""))
    return summary
