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


def test_no_random_flip_during_ssdlite_search() -> None:
    """FNA: "the other search settings are the same as the RetinaNet experiment", whose search
    has no random flip; SSD's photometric distortion, zoom-out and crop stay (before: flip)."""
    cfg = _resolved("ssdlite")
    assert cfg.augment == "ssd-noflip"
    kinds = {type(t) for t in train_transform(cfg.augment).transforms}
    assert v2.RandomHorizontalFlip not in kinds
    assert {v2.RandomPhotometricDistort, v2.RandomZoomOut, v2.RandomIoUCrop} <= kinds
    # fine-tuning keeps its flip
    assert v2.RandomHorizontalFlip in {type(t) for t in train_transform(
        get_task("ssdlite").default_augment).transforms}


@pytest.mark.parametrize("task,lr", [("retinanet", 0.02), ("ssdlite", 0.03)])
def test_search_warm_up_rises_from_zero(task: str, lr: float) -> None:
    """FNA's appendix: the lr rises linearly "from 0 to 0.02" (RetinaNet) and "from 0 to 0.03"
    (SSDLite) over 500 iterations (before: from a third of it)."""
    tc = _resolved(task).train
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, tc.optimizer, tc.lr, 0.0, 0.9, 1.0)
    sched = build_scheduler(opt, 10_000, tc.schedule, tc.warmup_iters, tc.warmup_ratio,
                            tc.milestones)
    lrs = []
    for _ in range(tc.warmup_iters + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[250] == pytest.approx(lr / 2) and lrs[500] == pytest.approx(lr)


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


def test_search_help_gives_the_size_that_runs() -> None:
    """`search --help` quotes each task's default --size as the search runs it: DeepLab's
    321x321 crops (FNA's search), not its fine-tuning's 769 (before: 769)."""
    import dataclasses

    from fnacli.pipeline.search_oneshot import OneShotSearchConfig, oneshot_input
    from fnacli.pipeline.search_options import SearchOptions, search_input

    text = next(f for f in dataclasses.fields(SearchOptions) if f.name == "size").metadata["help"]
    assert "769" not in text and "321" in text
    o = OneShotSearchConfig(supernet="s.safetensors", output="o.safetensors")
    for name in ("deeplabv3", "ssdlite", "retinanet"):
        task = get_task(name)
        size = search_input(o, task)[0]
        assert oneshot_input(o, task)[0] == size
        assert f"{size[0]}x{size[1]}" in text or f" {size[0]}" in text
    assert search_input(o, get_task("deeplabv3"))[0] == (321, 321)

