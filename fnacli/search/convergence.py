"""How far α/β have moved from uniform: the numbers a search reports every epoch, and the
warning at its end when the derived architecture is still close to a random draw.

- ``argmax_probability``: the probability of the argmax path (every layer's and stage's most
  likely choice), beside that of any path under uniform α/β;
- ``entropy``: per layer (and channel-searched stage), the entropy of its probabilities over
  the entropy of a uniform choice (1: uniform, 0: decided); the median over layers;
- ``top2_gap``: per layer the most likely choice's probability minus the second's (median);
- ``argmax_changed``: the layers whose argmax differs from the previous epoch's.

A search whose median layer entropy is still above ``NEAR_UNIFORM`` at its end derived an
architecture that α barely prefers: the benchmark (docs/search-quality.md) found such
searches no better than random architectures at matched cost.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import torch

from fnacli.spec import SpaceSpec

NEAR_UNIFORM = 0.8  # median normalised entropy at or above which α is "near uniform"


def _layers(alpha_probs: Mapping, beta_probs: Mapping) -> list[tuple[str, list[float]]]:
    """(name, probabilities) of every choice with more than one candidate, α then β."""
    out = [(f"{s}.{i}", p.detach().double().cpu().tolist()) for (s, i), p in alpha_probs.items()]
    out += [(f"beta {s}", p.detach().double().cpu().tolist()) for s, p in beta_probs.items()]
    return [(n, p) for n, p in out if len(p) > 1]


def normalised_entropy(p: Sequence[float]) -> float:
    """H(p) / log(number of candidates): 1 uniform, 0 decided."""
    if len(p) < 2:
        return 0.0
    return -sum(x * math.log(x) for x in p if x > 0) / math.log(len(p))


def epoch_record(alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                 beta_probs: Mapping[int, torch.Tensor],
                 previous_argmax: Mapping[str, int] | None = None) -> dict:
    """The convergence numbers of one epoch (see the module docstring), JSON-ready;
    ``"argmax"`` (layer -> index) is what the next epoch's ``previous_argmax`` takes."""
    layers = _layers(alpha_probs, beta_probs)
    if not layers:
        return {"layers": 0}
    argmax = {n: max(range(len(p)), key=p.__getitem__) for n, p in layers}
    log_p = sum(math.log(max(p)) for _, p in layers)
    log_uniform = -sum(math.log(len(p)) for _, p in layers)
    ent = [normalised_entropy(p) for _, p in layers]
    gaps = [sorted(p)[-1] - sorted(p)[-2] for _, p in layers]
    changed = ([n for n in argmax if previous_argmax.get(n) != argmax[n]]
               if previous_argmax is not None else None)
    return {"layers": len(layers), "argmax_log10_probability": log_p / math.log(10),
            "uniform_log10_probability": log_uniform / math.log(10),
            "entropy_median": statistics.median(ent), "entropy_max": max(ent),
            "entropy": {n: round(e, 4) for (n, _), e in zip(layers, ent, strict=True)},
            "top2_gap_median": statistics.median(gaps),
            "argmax_changed": None if changed is None else len(changed),
            "argmax_changed_layers": changed, "argmax": argmax}


def history_fields(rec: Mapping) -> dict:
    """What an epoch's history record keeps of ``epoch_record`` (the per-layer entropies and
    the changed layers' names go to the metrics line only)."""
    return {k: v for k, v in rec.items() if k not in ("entropy", "argmax_changed_layers")}


def previous_argmax(history: Sequence[Mapping]) -> dict[str, int] | None:
    """The argmax of the last epoch recorded in a search's ``history`` (None: none yet)."""
    for rec in reversed(history):
        conv = rec.get("convergence")
        if conv and "argmax" in conv:
            return dict(conv["argmax"])
    return None


def summary_text(rec: Mapping) -> str:
    """One line for the epoch's log."""
    if not rec.get("layers"):
        return "no choices"
    changed = rec["argmax_changed"]
    return (f"argmax path p=1e{rec['argmax_log10_probability']:.1f} (uniform "
            f"1e{rec['uniform_log10_probability']:.1f}), layer entropy median "
            f"{rec['entropy_median']:.2f}, top-2 gap median {rec['top2_gap_median']:.2f}"
            + ("" if changed is None else f", argmax changed in {changed}/{rec['layers']}"))


def near_uniform_warning(rec: Mapping, arch_steps: int, arch_lr: float,
                         candidates: int | None = None) -> str | None:
    """The end-of-search warning when α is still near uniform, saying what to change (with
    ``candidates``, the most any layer offers: an lr already at --arch-lr auto's value is not
    told to use auto)."""
    if not rec.get("layers") or rec["entropy_median"] < NEAR_UNIFORM:
        return None
    auto = auto_arch_lr(arch_steps, candidates) if candidates else None
    lr_advice = ("give --arch-lr auto (sized to the number of α/β steps, docs/search.md)"
                 if auto is None or arch_lr < 0.999 * auto else
                 f"give a larger --arch-lr than auto's {auto:.3g} (auto assumes the α "
                 "gradient's signal-to-noise ratio of fnacli's benchmark; a noisier one needs "
                 "more)")
    changed = rec.get("argmax_changed")
    moving = (f", and its argmax still changed in {changed} of {rec['layers']} layers in the "
              "last epoch" if changed else "")
    return (f"the derived architecture is close to a random draw: its path probability is "
            f"1e{rec['argmax_log10_probability']:.1f} against 1e"
            f"{rec['uniform_log10_probability']:.1f} for any path under uniform α/β, the "
            f"median layer keeps {rec['entropy_median']:.0%} of a uniform choice's entropy"
            f"{moving}. {arch_steps} α/β steps at --arch-lr {arch_lr:g} did not decide it: "
            f"{lr_advice}, search longer (--epochs), or train the weight steps on the "
            "fine-tuning recipe (--weight-recipe finetune) so that the supernet's losses tell "
            "candidates apart")


def most_candidates(space: SpaceSpec) -> int:
    """The most candidates any layer (or channel-searched stage) of ``space`` offers."""
    from fnacli.nn.supernet import op_choices, width_choices

    return max([len(c) for *_, c in op_choices(space)] + [len(w) for _, w in
                                                           width_choices(space)] + [1])


# -- --arch-lr auto ------------------------------------------------------------------------------
DRIFT_RATE = 0.25  # Adam's mean step over its lr at the α-gradient SNR the benchmark measured


def decisive_gap(candidates: int, p: float = 0.9) -> float:
    """The logit gap that gives one of ``candidates`` probability ``p`` over the rest
    (equal among themselves): log(p (K - 1) / (1 - p))."""
    return math.log(p * (candidates - 1) / (1 - p)) if candidates > 1 else 0.0


def auto_arch_lr(arch_steps: int, candidates: int, floor: float = 0.0) -> float:
    """The α/β lr that lets ``arch_steps`` Adam steps open a decisive gap (``decisive_gap``)
    between a layer's ``candidates``: Adam moves a logit by about lr per step when its
    gradient keeps its sign, by ``DRIFT_RATE`` x lr on average at a signal-to-noise ratio near
    0.27 (the benchmark's α gradients), so lr = gap / (DRIFT_RATE x steps). Never below
    ``floor`` (the task's recipe)."""
    if arch_steps < 1:
        return floor
    return max(floor, decisive_gap(candidates) / (DRIFT_RATE * arch_steps))
