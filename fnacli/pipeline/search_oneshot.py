"""DetNAS's one-shot search as a step: train the supernet one uniform path at a time (to
``trained``, default OUTPUT with ``.oneshot.safetensors``, with TRAINED.ckpt /
TRAINED.metrics.jsonl), then search it by evolution or random sampling (OUTPUT.search.json
state, OUTPUT.history.jsonl); see docs/evolution.md. The fitness images are held out by
``fnacli.pipeline.fitness``; ``retrain`` (DetNAS's random baseline) is
``fnacli.pipeline.search_random``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import (
    Reporter,
    as_size,
    in_processes,
    refuse_stdout,
    step,
    task_of,
)
from fnacli.pipeline.confirm import first_rung_epochs
from fnacli.pipeline.fitness import Splits, fitness_sets, hold_out_fitness
from fnacli.pipeline.search_options import (
    ONESHOT,
    ONESHOT_COST_SCOPE,
    SearchOptions,
    SearchResult,
    check_latency,
    cost_input_size,
    default_size,
    latency_table,
    madds_window,
    train_config,
)
from fnacli.settings import setting
from fnacli.tasks import per_task

ONESHOT_STRATEGIES = ("evolution", "random")
_oneshot = functools.partial(setting, group=ONESHOT)
_METRICS = per_task(lambda t: "|".join(t.metric_names[:7]) + ("|…" * (len(t.metric_names) > 7)))


@dataclass
class OneShotSearchConfig(SearchOptions):
    strategy: str = setting("evolution", api="evolution (DetNAS) or random (random search over the "
                            "trained supernet).")
    skip_training: bool = _oneshot(False, "SUPERNET is already trained one-shot (a --trained "
                                   "file): search it directly.")
    train_only: bool = _oneshot(False, "Train the one-shot supernet (to --trained) and stop; "
                                "search it later with --skip-training.")
    trained: str | Path | None = _oneshot(None, "Where the trained supernet goes [OUT with "
                                          ".oneshot.safetensors].", metavar="PATH")
    population: int = _oneshot(50, "Candidates per generation (random: per batch).", min=1)
    parents: int = _oneshot(10, "Top-k candidates that parent the next generation (fnacli's "
                            "choice; DetNAS gives no k).", min=1)
    parent_pool: str = _oneshot("population", "Where the k parents come from: the last "
                                "generation (DetNAS's Alg. 2) or every candidate so far "
                                "(elitist).", metavar="population|elitist")
    mutation_prob: float = _oneshot(0.1, "Probability to resample each choice when mutating "
                                    "(fnacli's choice; DetNAS gives none).", min=0.0, max=1.0)
    generations: int = _oneshot(20, "Generations.", min=1)
    freeze_bn: bool = _oneshot(False, "Supernet training keeps BN statistics fixed (tiny "
                               "per-process batches; multi-process CPU runs, which have no "
                               "SyncBatchNorm).")
    candidates: int | None = _oneshot(None, "random: architectures to evaluate [population x "
                                      "generations].", min=1)
    max_madds: str | float | None = _oneshot(None, "MAdds limit of every candidate (e.g. 300M, "
                                             "1.2G), on the backbone as DetNAS (or what "
                                             "--cost-scope says).", metavar="MADDS")
    # with max_madds: a matched-cost window
    min_madds: str | float | None = _oneshot(None, "Lower MAdds limit of every candidate: with "
                                             "--max-madds a matched-cost window (DetNAS's random "
                                             "baseline).", metavar="MADDS")
    max_params: str | float | None = _oneshot(None, "Backbone-parameter limit of every "
                                              "candidate (e.g. 2.5M, or 60% of the seed's).",
                                              metavar="PARAMS")
    # "12ms", or milliseconds (needs latency_table)
    max_latency: str | float | None = _oneshot(None, "Latency limit of every candidate by "
                                               "--latency-table (e.g. 12ms, 800us).",
                                               metavar="TIME")
    metric: str | None = _oneshot(None, f"Fitness: one of the task's numbers ({_METRICS}) "
                                  f"[{per_task('metric')}].")
    remap_prior: float = _oneshot(0.0, "Weigh candidates by how much of the seed's weights their "
                                  "remap keeps: fitness + W·log(kept) (0: off).", min=0.0,
                                  metavar="W")
    calib_images: int = _oneshot(256, "Training images for each candidate's BN recalibration.",
                                 min=1)
    calib_batch: int = _oneshot(16, "Batch size of BN recalibration and evaluation.", min=1)
    # 1: one subset (as before this option: the same fitness, the same files)
    calib_draws: int = _oneshot(1, "Recalibrate BN on R different seeded subsets of "
                                "--calib-images and score each candidate R times; its fitness "
                                "is the mean (less ranking noise, R times the scoring time; 1: "
                                "one subset, as before this option).",
                                min=1, metavar="R")
    eval_images: int | None = _oneshot(None, "Score on a fixed subset of N held-out images "
                                       "[all].", min=1)
    record_top: int = _oneshot(20, "Best candidates listed in the output (derive --top).", min=1)
    stop_after_candidates: int | None = _oneshot(None, "Stop the search after N evaluations of "
                                                 "this run; continue with --resume.", min=1,
                                                 metavar="N")
    # held out of train [min(5000, 20%)]
    fitness_images: str | float | int | None = _oneshot(
        None, "Fitness images held out of the training split (a count, or a fraction below 1); "
        "the supernet trains on the rest [min(5000, max(20%, min(128, 30%))): DetNAS's 5000 "
        "on a large split, and at least 128 images (30% of a smaller split): the AP of a few "
        "dozen images ranks candidates too noisily].", metavar="N|FRACTION")
    fitness_ann: str | Path | None = _oneshot(None, "An explicit fitness annotation file instead "
                                              "(its images are left out of supernet training).",
                                              metavar="JSON")
    fitness_img_dir: str | Path | None = _oneshot(None, "Images of --fitness-ann.",
                                                  metavar="DIR")
    # random: DetNAS's baseline, N specs to fine-tune
    retrain: int | None = _oneshot(None, "random only: DetNAS's random baseline. Draw N "
                                   "architectures uniformly under --max-madds and write their "
                                   "specs into the folder -o, to be fine-tuned with the searched "
                                   "one's settings (no supernet training, no fitness).", min=1,
                                   metavar="N")
    confirm_top: int = _oneshot(0, "After the search, confirm the K best by successive halving: "
                                "each remapped from --seed-checkpoint, fine-tuned on the "
                                "supernet's training images and scored on the fitness set; the "
                                "better half goes on at twice the epochs until one is left, "
                                "the derived architecture (0: off).", min=0, metavar="K")
    confirm_epochs: int | None = _oneshot(None, "Fine-tuning epochs of the first confirmation "
                                          "rung, doubled every rung [a tenth of the fine-tuning "
                                          f"recipe's: {per_task(first_rung_epochs)}].", min=1,
                                          metavar="E")
    seed_checkpoint: str | Path | None = _oneshot(None, "The seed the supernet was expanded "
                                                  "from (as 'fnacli remap' takes it), for "
                                                  "--confirm-top.", metavar="SEED")


def _check_scoring(o: OneShotSearchConfig) -> None:
    """The fitness and confirmation options, refused before any work where they cannot
    apply."""
    if o.retrain is not None:
        given = [f for f, v in (("--calib-draws", o.calib_draws != 1),
                                ("--remap-prior", o.remap_prior != 0),
                                ("--confirm-top", o.confirm_top)) if v]
        if given:
            raise UserError(f"{given[0]}: --retrain scores nothing (DetNAS's random baseline is "
                            "fine-tuned afterwards, each architecture alike)")
    if o.confirm_top == 1:
        raise UserError("--confirm-top: 0 (off) or at least 2 (successive halving compares "
                        "candidates), got 1")
    if o.confirm_top:
        if o.train_only:
            raise UserError("--confirm-top: --train-only searches nothing to confirm")
        if o.seed_checkpoint is None:
            raise UserError("--confirm-top: give --seed-checkpoint, the seed the supernet was "
                            "expanded from (each candidate is remapped from it)")
        seed = str(o.seed_checkpoint)
        if not seed.startswith(("torchvision:", "timm:")) and not Path(seed).is_file():
            raise UserError(f"--seed-checkpoint: {seed}: no such file")
    else:
        for flag, v in (("--confirm-epochs", o.confirm_epochs),
                        ("--seed-checkpoint", o.seed_checkpoint)):
            if v is not None:
                raise UserError(f"{flag}: only with --confirm-top K")


def _oneshot_files(output: str | Path, trained: str | Path | None) -> dict[str, Path]:
    out = Path(output)
    stem = out.with_suffix("") if out.suffix == ".safetensors" else out
    tr = Path(trained) if trained else Path(f"{stem}.oneshot.safetensors")
    return {"output": out, "trained": tr, "train_state": Path(f"{tr}.ckpt"),
            "train_metrics": Path(f"{tr}.metrics.jsonl"),
            "state": Path(f"{out}.search.json"), "history": Path(f"{out}.history.jsonl"),
            "confirm": Path(f"{out}.confirm.json"), "confirm_runs": Path(f"{out}.confirm")}


@step(OneShotSearchConfig)
def search_oneshot(o: OneShotSearchConfig) -> SearchResult:
    """DetNAS's one-shot search: train ``supernet`` one uniformly sampled path at a time
    (unless ``skip_training``; to ``trained``), then search it by evolution (``strategy``
    "evolution") or random sampling ("random"), every candidate's BN statistics recalibrated
    and its fitness measured on images held out of the training split, within the MAdds /
    latency limits. ``retrain=N`` instead draws DetNAS's random baseline (N specs into the
    folder ``output``). Settings left at None come from the task."""
    if o.strategy not in ONESHOT_STRATEGIES:
        raise UserError(f"--strategy: expected one of {', '.join(ONESHOT_STRATEGIES)} here, "
                        f"got {o.strategy!r}")
    refuse_stdout(o.output)
    if o.skip_training and o.train_only:
        raise UserError("--skip-training and --train-only exclude each other")
    if o.task is not None:
        task_of(o.task)
    if o.retrain is not None and o.strategy != "random":
        raise UserError("--retrain: DetNAS's random baseline needs --strategy random")
    _check_scoring(o)
    from fnacli.search.evolution import PARENT_POOLS

    if o.parent_pool not in PARENT_POOLS:
        raise UserError(f"--parent-pool: expected one of {', '.join(PARENT_POOLS)}, got "
                        f"{o.parent_pool!r}")
    if o.fitness_img_dir and not o.fitness_ann:
        raise UserError("--fitness-img-dir needs --fitness-ann")
    if o.fitness_ann and o.fitness_images is not None:
        raise UserError("--fitness-images and --fitness-ann exclude each other")
    from fnacli.cost.space import check_scope
    from fnacli.search.fitness_data import parse_amount

    check_scope(o.cost_scope or ONESHOT_COST_SCOPE)
    parse_amount(o.fitness_images)
    as_size(o.cost_size, "--cost-size")
    check_latency(o)
    if o.metric is not None:
        from fnacli.tasks import tasks

        names = dict.fromkeys(n for t in tasks() for n in t.metric_names)
        if o.metric not in names:
            raise UserError(f"--metric: expected one of {', '.join(names)}, got {o.metric!r}")
    from fnacli.validation import check_lr

    check_lr(o.lr)
    from fnacli.budget import Budget

    # parsed now, not after the supernet has been trained (60%: of the seed's, resolved then)
    budget = Budget.of(min_madds=o.min_madds, max_madds=o.max_madds, max_params=o.max_params)
    if not budget.relative:
        budget.resolve()
    if o.retrain is not None:
        from fnacli.pipeline.search_random import random_baseline

        return random_baseline(o)
    from fnacli.progress import tensorboard_dir

    tensorboard_dir(o.tensorboard)  # a missing package fails before the work
    result = in_processes(_oneshot, o)
    files = _oneshot_files(o.output, o.trained)
    if o.skip_training:
        files["trained"] = Path(o.supernet)
    result.files = {k: str(p) for k, p in files.items() if p.exists()}
    return result


def _oneshot(o: OneShotSearchConfig, env: Any) -> SearchResult:
    from fnacli.io import check_writable
    from fnacli.train import barrier

    say = Reporter(o.on_message, env.is_main)
    files = _oneshot_files(o.output, o.trained)
    splits = Splits(o)  # training and search read each split once
    again = o.force or o.resume
    if not o.train_only:
        # fail before the slow part
        check_writable(files["output"], again, also=(".search.json", ".history.jsonl",
                                                     ".confirm.json"))
        for p in (files["state"], files["history"], files["confirm"], files["confirm_runs"]):
            if p.exists() and not again:
                raise UserError(f"{p}: exists from an earlier search (continue it with "
                                "--resume, or start over with --force)")
        _check_seed(o)
    if o.skip_training:
        trained = Path(o.supernet)
    else:
        # ours to write (or written by this run before it stopped): claimed either way
        check_writable(files["trained"], True, also=(".ckpt", ".metrics.jsonl"))
        trained = files["trained"]
        if o.resume and trained.is_file() and not files["train_state"].is_file():
            say(f"{trained}: already trained, going on with the search")
        else:
            result = _train(o, files, env, say, splits)
            if not result.finished:
                return SearchResult(o.strategy, False, f"training stopped after "
                                    f"{result.steps} steps; continue with --resume",
                                    details={"trained": None, "steps": result.steps})
            if env.is_main:
                files["train_state"].unlink(missing_ok=True)  # done: resume goes to search
        if o.train_only:
            return SearchResult(o.strategy, True, f"{trained}: one-shot supernet trained",
                                details={"trained": str(trained)})
    # decided by every process before rank 0 may write a fresh search state (after the barrier)
    resume = o.resume and files["state"].is_file()
    barrier(env)
    return _evolve(o, trained, files, env, resume, say, splits)


def _check_seed(o: OneShotSearchConfig) -> None:
    """What --remap-prior and --confirm-top need of the supernet's recorded seed, checked
    before the supernet trains: the seed's spec (in its metadata, as 'fnacli expand' writes
    it), and for --confirm-top a --seed-checkpoint of that architecture."""
    if not (o.remap_prior or o.confirm_top):
        return
    recorded = _recorded_seed(Path(o.supernet))
    if o.remap_prior and recorded is None:
        raise UserError("--remap-prior: the supernet does not record the seed it was expanded "
                        "from")
    if o.confirm_top and recorded is not None:
        from fnacli.checkpoint import load_seed

        _, spec = load_seed(str(o.seed_checkpoint))
        if spec != recorded:
            raise UserError(f"--seed-checkpoint: {o.seed_checkpoint} is not the seed "
                            f"{o.supernet} was expanded from (another architecture)")


def _recorded_seed(supernet: Path) -> Any:
    """The seed spec a supernet's metadata records (None when it records none), from the
    file's header alone."""
    import json

    from fnacli.checkpoint import read_header
    from fnacli.spec import ArchSpec

    if not supernet.is_file():
        raise UserError(f"{supernet}: no such file")
    _, metadata = read_header(supernet)
    if "seed_spec" not in metadata:
        return None
    try:
        return ArchSpec.from_dict(json.loads(metadata["seed_spec"]),
                                  f"{supernet}: metadata seed_spec")
    except ValueError:
        raise UserError(f"{supernet}: metadata 'seed_spec' is not valid JSON") from None


def _train(o: OneShotSearchConfig, files: dict[str, Path], env: Any, say: Reporter,
           splits: Splits) -> Any:
    from fnacli.io import check_earlier_run, check_writable
    from fnacli.search import fitness_data as FD
    from fnacli.search.oneshot import OneshotInfo, train_oneshot
    from fnacli.search.supernet_io import read_supernet
    from fnacli.tasks import get_task, task_names
    from fnacli.validation import check_bn_batch

    ckpt = read_supernet(o.supernet)
    info = OneshotInfo.from_meta(ckpt.meta, str(o.supernet))
    name = o.task or (info.task if info else None)
    if name is None:
        raise UserError("--task: needed to train the one-shot supernet "
                        f"({' or '.join(task_names())})")
    task = get_task(name)
    check_bn_batch(task, o.batch_size or task.recipe.batch_size, env.world, o.freeze_bn)
    if not o.resume:
        check_earlier_run(files["train_state"], False, o.force)
    resume = o.resume and files["train_state"].is_file()
    if not resume and files["trained"].exists() and not o.force:
        raise UserError(f"{files['trained']}: a trained supernet is already there: search it "
                        "with --skip-training, or train again with --force")
    check_writable(files["trained"], True, also=(".ckpt", ".metrics.jsonl"))
    r = task.recipe
    size, augment = oneshot_input(o, task)
    epochs = o.epochs or task.oneshot_epochs
    dataset = FD.view(splits.train(task), train=True,
                      transform=task.train_transform(augment, size))
    dataset, fitness = hold_out_fitness(o, dataset, task, splits)
    batch = o.batch_size or r.batch_size
    tc = replace(train_config(o, task, epochs, epochs * (len(dataset) // batch), r.schedule,
                              r.milestones, r.warmup_iters), freeze_bn=o.freeze_bn)
    say(f"one-shot supernet training: {task.name} at {size[0]}x{size[1]}, {len(dataset)} "
        f"images ({fitness['images']} held out for fitness), {epochs} epochs of "
        f"{len(dataset) // batch} steps, uniform single-path sampling")
    return train_oneshot(ckpt, str(o.supernet), dataset, task.name, size, tc, env,
                         files["trained"], fitness=fitness, augment=augment,
                         state_path=files["train_state"],
                         metrics_path=files["train_metrics"], resume=resume,
                         stop_after=o.stop_after, force=o.force or o.resume,
                         log=say if env.is_main else None)


def oneshot_input(o: SearchOptions, task: Any) -> tuple[tuple[int, int], str]:
    """(input size, augmentation) of one-shot supernet training: DetNAS trains the supernet
    like the detector it will become, so the fine-tuning recipe's augmentation; the input is
    the search's (DeepLab: FNA's 321x321 crops, not fine-tuning's 769)."""
    return as_size(o.size) or default_size(task), o.augment or task.default_augment


def _evolve(o: OneShotSearchConfig, trained: Path, files: dict[str, Path], env: Any,
            resume: bool, say: Reporter, splits: Splits | None = None) -> SearchResult:
    """Search the trained supernet ``trained`` by evolution or random sampling."""
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.progress import SearchProgress, tensorboard_dir
    from fnacli.search import evolution as E
    from fnacli.search.bn_recal import calibration_draws, calibration_subset
    from fnacli.search.oneshot import (
        PathEvaluator,
        build_oneshot_detector,
        distributed_evaluate,
        load_trained,
    )
    from fnacli.tasks import get_task
    from fnacli.train import signal_received

    ckpt, info = load_trained(trained)
    if o.task and o.task != info.task:
        raise UserError(f"--task {o.task}: {trained} was trained one-shot for {info.task}")
    task = get_task(info.task)
    size = as_size(o.size) or info.size
    cfg = _evolution_config(o, task)
    latency = latency_table(o, ckpt.space, task.name, size, info.num_classes)
    fit_set, calib_pool, fitness = fitness_sets(o, info, task, splits)
    task.check_categories(info.categories, fit_set.categories(), str(trained),
                          str(fit_set.files.ann))
    if o.eval_images:
        fit_set = calibration_subset(fit_set, o.eval_images, o.seed)
    calibs = calibration_draws(calib_pool, o.calib_images, o.seed, o.calib_draws)
    calib = calibs[0]
    if o.calib_draws > 1 and len(calib) == len(calib_pool):
        say.warning(f"--calib-draws {o.calib_draws}: the {len(calib_pool)} training images for "
                    f"BN recalibration are no more than --calib-images {o.calib_images}, so "
                    "every draw is all of them (the same fitness, R times the work)")
    scope = o.cost_scope or ONESHOT_COST_SCOPE
    cost_size = cost_input_size(o, task, size)
    detector, supernet = build_oneshot_detector(ckpt, task.name, info.num_classes, size,
                                                str(trained))
    lut = load_or_build_lut(ckpt.space, task, cost_size, info.num_classes,
                            progress=env.is_main)
    lo, hi = madds_window(o, ckpt.seed_spec, lambda a: lut.arch_cost(a, scope))

    def params(arch: Any) -> float:
        return float(lut.profile(arch).params_parts["backbone"])

    cfg = dataclasses.replace(cfg, min_madds=lo, max_madds=hi,
                              max_params=_max_params(o, ckpt.seed_spec, params))
    enc = E.Encoding(ckpt.space)
    score = PathEvaluator(detector, supernet, enc, calibs if len(calibs) > 1 else calib,
                          fit_set, o.calib_batch, o.workers, env.device, task=task.name,
                          metric=cfg.metric)
    # the file's name, not its path: the same run in another folder gives the same bytes
    identity = {"supernet": trained.name, "task": task.name, "size": list(size),
                "calib_images": len(calib), "eval_images": len(fit_set),
                "cost_scope": scope, "cost_size": list(cost_size), "fitness": fitness,
                **_options_identity(o, latency)}
    term = _remap_prior_term(o, ckpt.seed_spec)
    search = E.OneShotSearch(enc, lambda arch: lut.arch_cost(arch, scope),
                             distributed_evaluate(score, env), cfg,
                             files["state"], files["history"], chunk=env.world,
                             write=env.is_main, identity=identity,
                             signal=lambda: signal_received(env),
                             latency=latency.latency_ms if latency is not None else None,
                             params=params, fitness_term=term)
    limit = (f" within {E.window_text(cfg.min_madds, cfg.max_madds)} MAdds ({scope} at "
             f"{cost_size[0]}x{cost_size[1]})" if cfg.max_madds or cfg.min_madds else "")
    limit += f" within {cfg.max_latency:g} ms" if cfg.max_latency else ""
    limit += (f" within {cfg.max_params / 1e6:.4g}M backbone params" if cfg.max_params
              else "")
    draws = f" ({o.calib_draws} draws, fitness their mean)" if o.calib_draws > 1 else ""
    prior = f" + {o.remap_prior:g}·log(kept) (remap prior)" if o.remap_prior else ""
    say(f"{o.strategy} search on {trained}: {cfg.total_candidates} candidates{limit}, fitness "
        f"{cfg.metric}{prior} on {len(fit_set)} images ({fitness['source']}), BN recalibrated "
        f"on {len(calib)} training images{draws}")
    if not o.resume and env.is_main:  # an earlier run's confirmation is not this one's
        import shutil

        files["confirm"].unlink(missing_ok=True)
        shutil.rmtree(files["confirm_runs"], ignore_errors=True)
    with SearchProgress(cfg, env.is_main, tensorboard_dir(o.tensorboard),
                        scope) as progress:
        search.on_candidate = progress.candidate
        search.on_round = progress.round
        result = search.run(resume=resume, stop_after=o.stop_after_candidates)
    if not search.cache:
        raise UserError("the search evaluated no architecture")
    confirmation = None
    if o.confirm_top and result.finished:
        confirmation = _confirm(o, search, task, size, fit_set, calib_pool, files, env, say,
                                identity)
    return _evolved(o, search, result, ckpt, info, latency, files, env, identity, confirmation)


def _options_identity(o: OneShotSearchConfig, latency: Any) -> dict:
    """The options a resumed search must share, only where given: a search without them
    keeps its identity (and resumes) as before they existed."""
    return {**({"calib_draws": o.calib_draws} if o.calib_draws != 1 else {}),
            **({"remap_prior": o.remap_prior} if o.remap_prior else {}),
            **({"latency_table": latency.identity()} if latency is not None else {})}


def _remap_prior_term(o: OneShotSearchConfig, seed: Any) -> Any:
    """The remapping prior's fitness term (None when off)."""
    if not o.remap_prior:
        return None
    from fnacli.search.remap_prior import fitness_term

    if seed is None:
        raise UserError("--remap-prior: the supernet does not record the seed it was "
                        "expanded from")
    return fitness_term(seed, o.remap_prior)


def _confirm(o: OneShotSearchConfig, search: Any, task: Any, size: tuple[int, int],
             fit_set: Any, pool: Any, files: dict[str, Path], env: Any, say: Reporter,
             identity: dict) -> Any:
    """The confirmation stage (``fnacli.pipeline.confirm``) over the finished search's best
    candidates; None when the search evaluated fewer than two."""
    from fnacli.pipeline.confirm import confirm

    ranked = search.ranked()
    if len(ranked) < 2:
        say.warning(f"--confirm-top {o.confirm_top}: the search evaluated {len(ranked)} "
                    "architecture; nothing to confirm")
        return None
    return confirm(o, ranked, search.encoding, task, size, fit_set, pool,
                   search.config.metric, files, env, say, search._identity())


def _max_params(o: OneShotSearchConfig, seed: Any, params: Any) -> float | None:
    """``max_params`` as backbone parameters: given (2.5M) or a share of the seed's (60%)."""
    if o.max_params is None:
        return None
    from fnacli.budget import parse_amount

    amount = parse_amount(o.max_params, "params", "max_params")
    if amount.relative and seed is None:
        raise UserError("max_params: a relative budget is taken of the seed's parameters, and "
                        "this supernet records no seed; give a number",
                        "--max-params: a relative budget is taken of the seed's parameters, "
                        "and this supernet records no seed; give a number")
    return amount.of(params(seed) if amount.relative else None, "max_params")


def _evolution_config(o: OneShotSearchConfig, task: Any) -> Any:
    """The evolution (or random) search's settings (``fnacli.search.evolution``)."""
    from fnacli.cost.latency import parse_latency
    from fnacli.search import evolution as E

    return E.SearchConfig(strategy=o.strategy, population=o.population, parents=o.parents,
                          parent_pool=o.parent_pool, mutation_prob=o.mutation_prob,
                          generations=o.generations,
                          candidates=o.candidates,
                          # the MAdds window is set once the cost table is read
                          max_madds=None, min_madds=None,
                          max_latency=(parse_latency(o.max_latency, "--max-latency")
                                       if o.max_latency is not None else None),
                          metric=o.metric or task.metric, seed=o.seed)


def _evolved(o: OneShotSearchConfig, search: Any, result: Any, ckpt: Any, info: Any,
             latency: Any, files: dict[str, Path], env: Any, run: dict,
             confirmation: Any = None) -> SearchResult:
    """The outcome of a one-shot search: its best architecture (the confirmation's winner,
    when there was one), written (rank 0) into the searched checkpoint when the search
    finished. ``run``: the search's identity."""
    from fnacli.checkpoint import save_checkpoint
    from fnacli.search import evolution as E

    cfg, enc = search.config, search.encoding
    ranked = search.ranked()
    best = ranked[0]
    if confirmation is not None and confirmation.winner is not None:
        best = confirmation.winner
    details = {"metric": cfg.metric, "best_fitness": best.fitness, "best_madds": best.madds,
               "best_arch": enc.arch(best.genome).to_dict(), "evaluated": len(ranked),
               "rounds": result.rounds}
    if confirmation is not None:
        details["confirm"] = confirmation.table
    lat = ""
    if latency is not None:
        details["best_latency_ms"] = latency.latency_ms(enc.arch(best.genome))
        lat = f", {details['best_latency_ms']:.2f} ms predicted"
    if not result.finished:
        return SearchResult(o.strategy, False, f"search stopped after {len(ranked)} "
                            "evaluations; continue with --resume", None, details)
    if confirmation is not None and confirmation.winner is None:
        return SearchResult(o.strategy, False, f"confirmation stopped after "
                            f"{confirmation.runs} fine-tuning runs; continue with --resume",
                            None, details)
    if env.is_main:
        tensors = dict(ckpt.weights)
        tensors.update(E.arch_logits(enc, best.genome))
        meta = {k: v for k, v in ckpt.meta.items() if k != "search"}
        meta["search"] = {"strategy": o.strategy, "task": run["task"], "size": run["size"],
                          **{k: v for k, v in cfg.identity().items() if k != "strategy"},
                          "num_classes": info.num_classes, "categories": info.categories,
                          "generations": cfg.generations, "candidates": cfg.total_candidates,
                          "rounds": result.rounds, "evaluated": len(ranked),
                          **{k: run[k] for k in ("calib_images", "eval_images", "cost_scope",
                                                 "cost_size", "calib_draws", "remap_prior")
                             if k in run},
                          "fitness": {k: v for k, v in run["fitness"].items() if k != "ids"},
                          "supernet": run["supernet"], "finished": True,
                          "derived": details["best_arch"],
                          "top": E.candidates_meta(ranked[:o.record_top], enc)}
        if confirmation is not None:
            meta["search"]["confirm"] = confirmation.table
        save_checkpoint(files["output"], tensors, "searched", meta, force=o.force or o.resume)
    what = f"best {cfg.metric} {best.fitness:.4f}"
    if confirmation is not None:
        t = confirmation.table
        last = t["rungs"][-1]
        won = next(r for r in last["runs"] if r["kept"])
        what = (f"search rank {t['winner']['rank']} of the top {t['top']}, confirmed by "
                f"successive halving ({t['metric']} {won['metric']:.4f} after "
                f"{last['epochs']} fine-tuning epochs; fitness {best.fitness:.4f})")
    return SearchResult(o.strategy, True,
                        f"{files['output']}: {what} at {E.format_madds(best.madds)} MAdds{lat} "
                        f"({o.strategy}, {len(ranked)} architectures evaluated)",
                        str(files["output"]), details)
