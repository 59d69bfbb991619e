"""The papers' search and fine-tuning recipes are the defaults (FNA's appendix, Jung et al.
for RetinaNet), resolved as `fnacli search` and `fnacli finetune` resolve them."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from fnacli.detection.transforms import train_transform
from fnacli.pipeline.search_differentiable import DifferentiableSearchConfig, differentiable_config
from fnacli.search.architect import ARCH_BETAS
from fnacli.search.differentiable import ARCH_LR, ARCH_WD, resolve_lambda
from fnacli.tasks import get_task
from fnacli.train import build_optimizer, build_scheduler

IMAGES = 16000  # 8000 per half: 1000 weight steps per epoch at batch 8, 250 at 32


def _resolved(task: str, **given: object):  # noqa: ANN202 - a SearchConfig
    o = DifferentiableSearchConfig(supernet="s.safetensors", output="o.safetensors", task=task,
                                   **given)
    return differentiable_config(o, task, IMAGES)


def _drops(cfg, steps_per_epoch: int) -> list[int]:  # noqa: ANN001
    """Epochs (1-based boundaries) at which the weight lr is multiplied by 0.1."""
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg.train.optimizer, 1.0, 0.0, 0.9, 1.0)
    total = cfg.train.epochs * steps_per_epoch
    sched = build_scheduler(opt, total, "step", 0, 1 / 3, cfg.train.milestones, 0.1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return [i // steps_per_epoch for i in range(1, total) if lrs[i] < lrs[i - 1] * 0.5]


def test_retinanet_search_recipe_is_the_papers() -> None:
    cfg = _resolved("retinanet")
    tc = cfg.train
    assert (tc.optimizer, tc.momentum, tc.weight_decay) == ("sgd", 0.9, 1e-4)
    assert tc.batch_size == 8 and tc.lr == pytest.approx(0.02)
    assert tc.warmup_iters == 500 and tc.epochs == 14
    assert _drops(cfg, 10) == [8, 11]
    assert cfg.warmup_epochs == 8  # epochs 1-8 weights only, α/β from the 9th (Jung et al.)
    assert cfg.arch_every == 1  # alternating: one weight step, one α/β step
    assert (cfg.arch_lr, ARCH_WD, ARCH_BETAS) == (3e-4, 1e-3, (0.5, 0.999))
    assert resolve_lambda(cfg, 5.0) == 0.02 and cfg.tau == 10.0 and cfg.cost_gamma == 5.0
    assert cfg.cost_scope == "blocks" and cfg.lut_size == (1088, 800)
    assert cfg.size == (1333, 800)


def test_no_random_flip_during_retinanet_search() -> None:
    cfg = _resolved("retinanet")
    assert cfg.augment == "none"
    flips = [t for t in train_transform(cfg.augment).transforms
             if isinstance(t, v2.RandomHorizontalFlip)]
    assert flips == []


def test_ssdlite_search_recipe_is_the_papers() -> None:
    cfg = _resolved("ssdlite")
    tc = cfg.train
    assert (tc.optimizer, tc.weight_decay) == ("rmsprop", 4e-5)
    assert tc.batch_size == 32 and tc.lr == pytest.approx(0.03)
    assert tc.warmup_iters == 500 and tc.epochs == 24
    assert _drops(cfg, 10) == [16, 22]
    assert cfg.warmup_epochs == 12 and cfg.arch_every == 1
    assert resolve_lambda(cfg, 0.5) == 0.2 and cfg.tau == 10.0 and cfg.cost_gamma == 10.0
    assert cfg.arch_lr == ARCH_LR == 3e-4
    # lr scales linearly with the batch
    assert _resolved("ssdlite", batch_size=64).train.lr == pytest.approx(0.06)


def test_ssdlite_finetune_recipe_is_60_epochs_with_drops_at_36_50_56() -> None:
    r = get_task("ssdlite").recipe
    assert r.epochs == 60
    assert [round(m * r.epochs) for m in r.milestones] == [36, 50, 56]


@pytest.mark.parametrize("cost,unit", [("madds", 1e9), ("latency", 1e6)])
def test_linear_default_lambda_matches_the_log_forms_pull_at_the_start(cost: str,
                                                                       unit: float) -> None:
    """The linear form's default λ gives the cost term the log form's gradient at C₀, with
    the γ the cost term applies (FNA's γ for MAdds, none for a latency in ms)."""
    from fnacli.search.architect import cost_term

    c0 = 3.7 * unit  # 3.7 GMAdds or 3.7 ms
    grads = {}
    for form in ("log", "linear"):
        cfg = _resolved("ssdlite", cost_form=form)
        cfg.cost = cost
        lam = resolve_lambda(cfg, c0 / unit)
        c = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
        cost_term(c, form, lam, cfg.tau, None, cfg.applied_gamma, unit).backward()
        grads[form] = float(c.grad)
    assert grads["linear"] == pytest.approx(grads["log"], rel=1e-9)
