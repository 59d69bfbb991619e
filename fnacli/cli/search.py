"""`fnacli search SUPERNET --task … --data DIR -o SEARCHED`: architecture search
(``fnacli.pipeline.search``): FNA's differentiable search (default) or DetNAS's one-shot
evolution/random search. Options of the other strategy are refused.

Files beside SEARCHED: SEARCHED.ckpt (training state, --resume) and SEARCHED.metrics.jsonl
(JSON lines: training steps, α/β steps, and α/β probabilities per epoch), SEARCHED.arch.svg
and .png (those probabilities and the MAdds over the epochs, as a picture). SEARCHED itself is
rewritten after every epoch, so 'fnacli derive' works on a search in progress.
"""

from __future__ import annotations

import functools
import json
from dataclasses import fields
from enum import StrEnum

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.tasks import per_task, size_text

Strategy = StrEnum("Strategy", {n: n for n in ("differentiable", "evolution", "random")})
ARCH, ONESHOT = "Architecture (differentiable)", "One-shot (evolution, random)"
EPOCHS = (f"differentiable: {per_task('search_defaults.epochs')}; one-shot supernet "
          f"training: {per_task('oneshot_epochs')}")
SEARCH_LR = per_task(lambda t: f"{c.g(t.search_defaults.weight_recipe(t.recipe).lr)} per "
                               f"{t.search_defaults.weight_recipe(t.recipe).base_batch}")
SEARCH_WD = per_task(lambda t: c.g(t.search_defaults.weight_recipe(t.recipe).weight_decay))
SEARCH_AUGMENT = per_task(lambda t: t.search_defaults.augment or t.default_augment)
_opt = functools.partial(c.option, panel=ARCH)
_oneshot = functools.partial(c.option, panel=ONESHOT)


@app.command("search", cls=c.PanelCommand,
             help="Search an architecture on a detection task: FNA's differentiable search "
                  "(default) or DetNAS's one-shot evolution/random search.")
def search(
    ctx: typer.Context,
    supernet: str = typer.Argument(..., metavar="SUPERNET", help="Supernet checkpoint from 'fnacli "
                                   "expand' (or, with --skip-training, one trained one-shot)."),
    output: str = c.opt("--output", "Output searched checkpoint (.safetensors); SEARCHED.ckpt and "
                                    "SEARCHED.metrics.jsonl go beside it.", metavar="SEARCHED"),
    strategy: Strategy = typer.Option(Strategy.differentiable, "--strategy",
                                      help="differentiable (FNA, default) or one-shot (DetNAS)."),
    task: str | None = c.opt("--task", "Detector to search for [from the trained supernet with "
                                       "--skip-training]."),
    data: str | None = c.opt("--data"),
    train_ann: str | None = c.opt("--train-ann", "Training annotations."),
    train_images: str | None = c.opt("--train-images", "Training images."),
    val_ann: str | None = c.opt("--val-ann", "Reporting split (what 'fnacli eval' reports on): "
                                             "one-shot fitness images may not be in it."),
    val_images: str | None = c.opt("--val-images", "Reporting split's images."),
    size: str | None = c.opt("--size", f"Input size [{per_task(lambda t: size_text(t.recipe.size))}"
                                       "; with --skip-training the size trained at]."),
    epochs: int | None = _opt(None, "--epochs", min=1, panel=c.SCHEDULE,
                              help=f"Epochs [{EPOCHS}]."),
    batch_size: int | None = _opt(None, "--batch-size", min=1, panel=c.SCHEDULE,
                                  help=f"Global training batch [{per_task('recipe.batch_size')}]."),
    lr: float | None = _opt(None, "--lr", min=0.0, panel=c.SCHEDULE,
                            help=f"Base lr of the weight steps [differentiable: {SEARCH_LR} "
                                 "images; one-shot: the finetune recipe's], scaled to "
                                 "--batch-size."),
    optimizer: c.Optim | None = c.opt("--optimizer"),
    momentum: float = c.opt("--momentum"),
    weight_decay: float | None = _opt(None, "--weight-decay", min=0.0, panel=c.SCHEDULE,
                                      help=f"[differentiable: {SEARCH_WD}; one-shot: {c.WD}]"),
    warmup_iters: int | None = _opt(None, "--warmup-iters", min=0, panel=c.SCHEDULE,
                                    help="Linear warm-up [min(500, 10% of the steps)]."),
    clip_grad: float | None = _opt(None, "--clip-grad", min=0.0, panel=c.SCHEDULE,
                                   help="Max gradient norm [retinanet 35]; 0 = off."),
    augment: str | None = _opt(None, "--augment", metavar="|".join(c.AUGMENTS), panel=c.DATA,
                               help=f"Training augmentation [differentiable: {SEARCH_AUGMENT} (no "
                                    "flip during a RetinaNet search, as FNA); one-shot: "
                                    f"{per_task('default_augment')}]."),
    cost_scope: str | None = _opt(None, "--cost-scope", metavar="blocks|backbone|detector",
                                  help="What the MAdds cost counts: the searched blocks, the whole "
                                       "backbone or the whole detector [differentiable: blocks "
                                       "(the cost term, as FNA/Jung et al.); evolution/random: "
                                       "backbone (--max-madds, as DetNAS)]."),
    cost_size: str | None = _opt(None, "--cost-size", metavar="N|WxH",
                                 help="Input size MAdds are counted at [retinanet 1088x800 as "
                                      "FNA/Jung et al. report it, ssdlite --size]."),
    workers: int = c.opt("--workers"),
    seed: int = c.opt("--seed", "Seed of paths, data order, populations."),
    device: c.Device = c.opt("--device"),
    checkpoint_every: int = c.opt("--checkpoint-every"),
    log_every: int = c.opt("--log-every"),
    tensorboard: str | None = c.tensorboard_opt("losses, lr, the cost term, MAdds and α/β "
                                                "(one-shot: each generation's fitness)"),
    stop_after: int | None = c.opt("--stop-after", "Stop training (checkpointed) after STEPS steps "
                                                   "of this run; continue with --resume."),
    resume: bool = c.opt("--resume", "Continue the training and the search where they stopped."),
    force: bool = c.opt("--force", "Overwrite outputs and start over (and accept a --latency-table "
                                   "measured on another machine)."),
    as_json: bool = c.opt("--json"),
    latency_table: str | None = c.opt("--latency-table", "Latency table from 'fnacli latency' "
                                      "(same space, task, size): for --cost latency / "
                                      "--max-latency, and reported beside MAdds."),
    # -- differentiable only
    warmup_epochs: int | None = _opt(None, "--warmup-epochs", min=0,
                                     help="Epochs of weight steps on uniform paths before α/β move "
                                          "[ssdlite 12 of 24, retinanet 8 of 14: that share of "
                                          "--epochs]; differentiable only."),
    arch_every: int | None = _opt(None, "--arch-every", min=1, metavar="K",
                                  help="Weight steps per α/β step "
                                       f"[{per_task('search_defaults.arch_every')}: the papers' "
                                       "alternation]."),
    cost_form: str = _opt("log", "--cost-form", metavar="log|linear",
                          help="Cost term: FNA's λ·log_τ(γ·C) or Jung et al.'s λ·γ·C (C = expected "
                               "GMAdds within --cost-scope)."),
    lam: float | None = _opt(None, "--lambda", min=0.0,
                             help=f"Cost weight λ [log: {per_task('search_defaults.lam')}; linear: "
                                  "matched to the log form at the start]."),
    tau: float | None = _opt(None, "--tau", help="Log base τ of the log cost "
                                                 f"[{per_task('search_defaults.tau')}]."),
    gamma: float | None = _opt(None, "--gamma", min=0.0,
                               help=f"Cost scale γ [{per_task('search_defaults.gamma')}]; in the "
                                    "log form it shifts the loss only."),
    target_madds: str | None = _opt(None, "--target-madds", metavar="MADDS",
                                    help="Budget (e.g. 800M, 1.2G): the cost term penalises only "
                                         "the excess over it."),
    min_depth: int = _opt(0, "--min-depth", min=0, metavar="N", help="Layers 0..N-1 of every stage "
                          "may not be skipped (against collapse to all-skip)."),
    arch_lr: float | None = _opt(None, "--arch-lr", min=0.0,
                                 help="Adam lr of α/β (betas 0.5/0.999; wd 1e-3, deeplabv3 4e-5) "
                                      "[3e-4, deeplabv3 1e-3]."),
    arch_step: str = _opt("full", "--arch-step", metavar="full|sampled",
                          help="α/β step: FNA's weighted sum of every candidate (full), or two "
                               "sampled candidates per layer and width with unbiased gates "
                               "(sampled: cheaper in time and memory, noisier)."),
    checkpoint_activations: bool = _opt(False, "--checkpoint-activations",
                                        help="Recompute the mixed layers in the α/β step's "
                                             "backward pass instead of keeping every candidate's "
                                             "activations (same gradients, less memory, more "
                                             "time)."),
    cost: str = _opt("madds", "--cost", metavar="madds|latency",
                     help="What the cost term counts: the detector's MAdds, or its latency by "
                          "--latency-table (C in ms)."),
    target_latency: str | None = _opt(None, "--target-latency", metavar="TIME",
                                      help="With --cost latency: a budget (e.g. 12ms); only the "
                                           "excess is penalised."),
    # -- one-shot only
    skip_training: bool = _oneshot(False, "--skip-training", help="SUPERNET is already trained "
                                   "one-shot (a --trained file): search it directly."),
    train_only: bool = _oneshot(False, "--train-only", help="Train the one-shot supernet (to "
                                "--trained) and stop; search it later with --skip-training."),
    trained: str | None = _oneshot(None, "--trained", metavar="PATH",
                                   help="Where the trained supernet goes [OUT with "
                                        ".oneshot.safetensors]."),
    population: int = _oneshot(50, "--population", min=1,
                               help="Candidates per generation (random: per batch)."),
    parents: int = _oneshot(10, "--parents", min=1,
                            help="Top-k candidates that parent the next generation."),
    mutation_prob: float = _oneshot(0.1, "--mutation-prob", min=0.0, max=1.0,
                                    help="Probability to resample each choice when mutating."),
    generations: int = _oneshot(20, "--generations", min=1, help="Generations."),
    candidates: int | None = _oneshot(None, "--candidates", min=1,
                                      help="random: architectures to evaluate [population x "
                                           "generations]."),
    max_madds: str | None = _oneshot(None, "--max-madds", metavar="MADDS",
                                     help="MAdds limit of every candidate (e.g. 300M, 1.2G), on "
                                          "the backbone as DetNAS (or what --cost-scope says)."),
    min_madds: str | None = _oneshot(None, "--min-madds", metavar="MADDS",
                                     help="Lower MAdds limit of every candidate: with --max-madds "
                                          "a matched-cost window (DetNAS's random baseline)."),
    max_latency: str | None = _oneshot(None, "--max-latency", metavar="TIME",
                                       help="Latency limit of every candidate by --latency-table "
                                            "(e.g. 12ms, 800us)."),
    fitness_images: str | None = _oneshot(None, "--fitness-images", metavar="N|FRACTION",
                                          help="Fitness images held out of the training split (a "
                                               "count, or a fraction below 1); the supernet trains "
                                               "on the rest [min(5000, 20%)]."),
    fitness_ann: str | None = _oneshot(None, "--fitness-ann", metavar="JSON",
                                       help="An explicit fitness annotation file instead (its "
                                            "images are left out of supernet training)."),
    fitness_img_dir: str | None = _oneshot(None, "--fitness-img-dir", metavar="DIR",
                                           help="Images of --fitness-ann."),
    retrain: int | None = _oneshot(None, "--retrain", min=1, metavar="N",
                                   help="random only: DetNAS's random baseline. Draw N "
                                        "architectures uniformly under --max-madds and write their "
                                        "specs into the folder -o, to be fine-tuned with the "
                                        "searched one's settings (no supernet training, no "
                                        "fitness)."),
    metric: str | None = _oneshot(None, "--metric", help="Fitness: one of the task's numbers "
                                  "(detection: COCOeval's AP, AP50, AP75, APs, APm, APl, AR1, …; "
                                  f"deeplabv3: mIoU, aAcc, mAcc) [{per_task('metric')}]."),
    calib_images: int = _oneshot(256, "--calib-images", min=1,
                                 help="Training images for each candidate's BN recalibration."),
    calib_batch: int = _oneshot(16, "--calib-batch", min=1,
                                help="Batch size of BN recalibration and evaluation."),
    eval_images: int | None = _oneshot(None, "--eval-images", min=1,
                                       help="Score on a fixed subset of N held-out images [all]."),
    record_top: int = _oneshot(20, "--record-top", min=1,
                               help="Best candidates listed in the output (derive --top)."),
    stop_after_candidates: int | None = _oneshot(None, "--stop-after-candidates", min=1,
                                                 metavar="N",
                                                 help="Stop the search after N evaluations of this "
                                                      "run; continue with --resume."),
) -> None:
    options = dict(locals())
    from fnacli.pipeline import search as S

    diff, oneshot = S.DifferentiableSearchConfig, S.OneShotSearchConfig
    cls, other = (diff, oneshot) if strategy is Strategy.differentiable else (oneshot, diff)
    foreign = {f.name for f in fields(other)} - {f.name for f in fields(cls)}
    for flag in c.given_flags(ctx, tuple(foreign - {"strategy"})):
        c.fail(f"{flag} does not apply to --strategy {strategy.value}")
    c.setup_logging()
    run = S.search_differentiable if cls is diff else S.search_oneshot
    result = run(c.config(cls, options, ("ctx", "as_json", *foreign)))
    if not result.is_main:
        return
    if as_json:
        c.print_result(json.dumps(result.to_dict()))
        return
    # the result is a file: stdout stays empty without --json, the summary goes to stderr
    c.show(result.report())
