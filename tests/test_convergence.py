"""The search's convergence numbers (against hand-computed cases) and --arch-lr auto's rule."""

from __future__ import annotations

import math

import pytest
import test_search_bytes
import torch

from fnacli.search import convergence as C


def test_uniform_alpha_is_near_uniform_and_warned() -> None:
    a = {(1, 0): torch.full((4,), 0.25), (1, 1): torch.full((2,), 0.5)}
    rec = C.epoch_record(a, {})
    assert rec["entropy_median"] == pytest.approx(1.0) and rec["top2_gap_median"] == 0.0
    assert rec["argmax_log10_probability"] == pytest.approx(math.log10(0.125))
    assert rec["uniform_log10_probability"] == pytest.approx(math.log10(0.125))
    assert rec["argmax_changed"] is None
    text = C.near_uniform_warning(rec, 96, 0.05)
    assert "close to a random draw" in text and "--arch-lr auto" in text and "96" in text
    # a search already at auto's lr is not told to use auto, but how far to go past it
    auto = C.auto_arch_lr(96, 7)
    text = C.near_uniform_warning(rec, 96, auto, candidates=7)
    assert "--arch-lr auto" not in text and f"larger --arch-lr than auto's {auto:.3g}" in text
    assert "--arch-lr auto" in C.near_uniform_warning(rec, 96, auto / 2, candidates=7)


def test_decided_alpha_is_not_warned_and_changes_are_counted() -> None:
    a = {(1, 0): torch.tensor([0.97, 0.01, 0.01, 0.01]), (1, 1): torch.tensor([0.02, 0.98])}
    b = {2: torch.tensor([0.9, 0.1])}
    rec = C.epoch_record(a, b)
    ent = -(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01)) / math.log(4)
    assert rec["entropy"]["1.0"] == pytest.approx(ent, abs=1e-4)
    assert rec["argmax_log10_probability"] == pytest.approx(math.log10(0.97 * 0.98 * 0.9))
    assert C.near_uniform_warning(rec, 96, 0.05) is None
    later = C.epoch_record({(1, 0): torch.tensor([0.1, 0.7, 0.1, 0.1]), (1, 1): a[(1, 1)]}, b,
                           rec["argmax"])
    assert later["argmax_changed"] == 1 and later["argmax_changed_layers"] == ["1.0"]
    # a single-candidate layer is not a choice; a decided one (underflowed to 0) is
    assert C.epoch_record({(1, 0): torch.tensor([1.0])}, {}) == {"layers": 0}
    assert C.epoch_record({(1, 0): torch.tensor([1.0, 0.0])}, {})["entropy_median"] == 0.0


def test_auto_arch_lr_opens_a_decisive_gap_in_the_steps_given() -> None:
    gap = C.decisive_gap(7)
    assert torch.softmax(torch.tensor([gap] + [0.0] * 6), 0)[0] == pytest.approx(0.9)
    lr = C.auto_arch_lr(96, 7)
    assert lr * 96 * C.DRIFT_RATE == pytest.approx(gap)
    assert C.auto_arch_lr(96_000_000, 7, floor=3e-4) == 3e-4  # never below the recipe's
    assert C.auto_arch_lr(192, 7) == pytest.approx(lr / 2)


def test_two_sided_cost_pulls_up_below_the_target_and_the_hinge_does_not() -> None:
    from fnacli.search.architect import cost_term

    target = 100e6
    for c, want in ((80e6, abs(math.log(0.8))), (125e6, math.log(1.25))):
        exp = torch.tensor(c, requires_grad=True)
        two = cost_term(exp, "log", 0.2, 10.0, target, 10.0, two_sided=True)
        assert float(two.detach()) == pytest.approx(0.2 * want / math.log(10))
        two.backward()
        assert (exp.grad < 0) == (c < target)  # below the target the cost pulls C up
    below = torch.tensor(80e6, requires_grad=True)
    hinge = cost_term(below, "log", 0.2, 10.0, target, 10.0)
    hinge.backward()
    assert float(hinge.detach()) == 0.0 and float(below.grad) == 0.0
    lin = cost_term(torch.tensor(80e6), "linear", 1.0, 10.0, target, 10.0, two_sided=True)
    assert float(lin) == pytest.approx(10 * 20e6 / 1e9)


def _supernet(tmp_path):
    from test_derive import small_space, write_supernet

    from fnacli.nn.supernet import op_choices, width_choices

    space = small_space()
    return write_supernet(tmp_path / "s.safetensors", space,
                          {(s, i): torch.zeros(len(c)) for s, i, c in op_choices(space)},
                          {s: torch.zeros(len(o)) for s, o in width_choices(space)})


def test_arch_lr_auto_and_the_fine_tuning_weight_recipe(tmp_path) -> None:
    from fnacli.pipeline.search_differentiable import (
        DifferentiableSearchConfig,
        differentiable_config,
    )
    from fnacli.tasks import get_task

    supernet = str(_supernet(tmp_path))

    def config(**kw):
        o = DifferentiableSearchConfig(supernet=supernet, output="o",
                                       task="ssdlite", epochs=4, warmup_epochs=2,
                                       batch_size=4, **kw)
        return differentiable_config(o, "ssdlite", 32)

    # 16 images for weights / 4 = 4 steps an epoch, 2 searching epochs: 8 α/β steps; the
    # small space's layers offer at most 3 candidates
    assert config(arch_lr="auto").arch_lr == pytest.approx(C.auto_arch_lr(8, 3))
    assert config(arch_lr="auto", arch_every=2).arch_lr == pytest.approx(C.auto_arch_lr(4, 3))
    assert config(arch_lr="0.01").arch_lr == 0.01
    task = get_task("ssdlite")
    assert config().arch_lr == task.search_defaults.arch_lr
    search, ft = config().train, config(weight_recipe="finetune").train
    assert ft.lr == pytest.approx(task.recipe.lr_for(4)) != search.lr
    assert ft.optimizer == task.recipe.optimizer
    assert (ft.schedule, ft.milestones, ft.epochs) == (search.schedule, search.milestones, 4)
    assert config(target_side="both").target_side == "both"
    from fnacli.errors import UserError

    for bad in ({"weight_recipe": "adam"}, {"target_side": "below"}, {"arch_lr": "fast"}):
        with pytest.raises(UserError):
            config(**bad)


world = test_search_bytes.world  # the fixture: a tiny supernet and data


def test_a_search_reports_convergence_and_warns_when_alpha_stays_uniform(world) -> None:
    import json
    from pathlib import Path

    from test_search_bytes import run

    lines = {}
    for name, lr in (("slow", 1e-3), ("fast", 50.0)):
        out = world["root"] / f"conv-{name}.safetensors"
        res = run(world, out, arch_lr=lr)
        lines[name] = [json.loads(x) for x in Path(f"{out}.metrics.jsonl").read_text()
                       .splitlines() if '"epoch"' in x]
        lines[name + "-warning"] = res.details["near_uniform_warning"]
    first, second = (r for r in lines["slow"] if r["event"] == "epoch")
    assert first["convergence"]["argmax_changed"] is None  # no epoch before it
    assert isinstance(second["convergence"]["argmax_changed"], int)
    assert second["convergence"]["entropy_median"] > 0.99  # 3 steps at 1e-3: still uniform
    assert set(second["layer_entropy"]) == set(second["convergence"]["argmax"])
    assert "close to a random draw" in lines["slow-warning"]
    fast = [r for r in lines["fast"] if r["event"] == "epoch"][-1]["convergence"]
    assert fast["entropy_median"] < C.NEAR_UNIFORM and lines["fast-warning"] is None
    # benchmarks/search_convergence.py re-reads the probabilities (rounded to 1e-6) of the
    # epoch lines: the same numbers
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "search_convergence.py"
    spec = importlib.util.spec_from_file_location("search_convergence", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    again = mod.epochs(world["root"] / "conv-slow.safetensors.metrics.jsonl")[-1]
    assert again["entropy_median"] == pytest.approx(second["convergence"]["entropy_median"],
                                                    abs=1e-4)
    assert again["argmax_changed"] == second["convergence"]["argmax_changed"]
