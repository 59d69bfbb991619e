"""The shared training loop: schedules, optimiser groups, data order, exact resume, NaN guard,
metrics, BN recalibration. A tiny regression model keeps these fast; the detector path is
covered end to end in test_finetune.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from fnacli.errors import UserError
from fnacli.train import (
    DivergedError,
    EpochBatches,
    MetricsLog,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    fit,
    load_train_state,
    lr_factor,
    param_groups,
    recalibrate_bn,
)


class Noisy(Dataset):
    """Keys are (epoch, idx); the noise is a function of the key, like detection augmentation."""

    def __init__(self, n: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        g = torch.Generator().manual_seed(epoch * 1000 + i)
        return self.x[i] + 0.05 * torch.randn(4, generator=g), self.y[i]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def _loss(model: nn.Module, batch: tuple, device: torch.device) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"mse": nn.functional.mse_loss(model(x.to(device)).squeeze(1), y.to(device))}


CFG = TrainConfig(epochs=3, batch_size=4, lr=0.05, optimizer="sgd", weight_decay=1e-3,
                  schedule="cosine", warmup_iters=3, clip_grad=5.0, seed=1, log_every=1)


def _records(path: Path) -> list[dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        r.pop("seconds", None)
    return recs


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_interrupt_and_resume_equals_uninterrupted_bitwise(tmp_path: Path,
                                                           optimizer: str) -> None:
    cfg = TrainConfig(**{**CFG.__dict__, "optimizer": optimizer})
    full = _model()
    res = fit(full, Noisy(), _loss, cfg, state_path=tmp_path / "a.ckpt",
              metrics_path=tmp_path / "a.jsonl")
    assert res.finished and res.steps == 9 and res.epochs == 3

    part = _model()
    res = fit(part, Noisy(), _loss, cfg, state_path=tmp_path / "b.ckpt",
              metrics_path=tmp_path / "b.jsonl", stop_after=4)  # mid epoch 2
    assert not res.finished and res.steps == 4
    assert load_train_state(tmp_path / "b.ckpt")["batch"] == 1
    resumed = _model(seed=99)  # other initial weights: everything must come from the state
    res = fit(resumed, Noisy(), _loss, cfg, state_path=tmp_path / "b.ckpt",
              metrics_path=tmp_path / "b.jsonl", resume=True)
    assert res.finished and res.steps == 9
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "a.jsonl") == _records(tmp_path / "b.jsonl")
    assert not torch.equal(a["0.weight"], _model().state_dict()["0.weight"])  # it trained


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "s.ckpt", stop_after=2)
    other = TrainConfig(**{**CFG.__dict__, "lr": 0.1, "workers": 0})
    with pytest.raises(UserError, match=r"was written by a run with lr=0.05, this run has "
                                        r"lr=0.1"):
        fit(_model(), Noisy(), _loss, other, state_path=tmp_path / "s.ckpt", resume=True)
    with pytest.raises(UserError, match="no training state to resume from"):
        fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "none.ckpt", resume=True)


def test_non_finite_loss_stops_before_touching_weights_and_keeps_the_state(
        tmp_path: Path) -> None:
    calls = {"n": 0}

    def poisoned(model: nn.Module, batch: tuple, device: torch.device) -> dict:
        calls["n"] += 1
        losses = _loss(model, batch, device)
        if calls["n"] == 5:
            losses["mse"] = losses["mse"] * float("nan")
        return losses

    cfg = TrainConfig(**{**CFG.__dict__, "checkpoint_every": 2})
    model = _model()
    state = tmp_path / "s.ckpt"
    with pytest.raises(DivergedError) as e:
        fit(model, Noisy(), poisoned, cfg, state_path=state)
    msg = str(e.value)
    assert "loss is nan at epoch 2, step 5" in msg and f"{state} is kept" in msg
    saved = load_train_state(state)
    assert saved["step"] == 4  # the last good one
    # the failing step did not update the weights (its forward pass did move BN running
    # statistics, which is why the saved state is what counts)
    current = dict(model.named_parameters())
    assert all(torch.equal(saved["model"][k], current[k]) for k in current)
    assert all(torch.isfinite(v.float()).all() for v in saved["model"].values())


def test_huge_lr_diverges_with_a_clear_error(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=50, batch_size=4, lr=1e30, optimizer="sgd", seed=0)
    with pytest.raises(DivergedError, match="no training state had been saved yet|is kept"):
        fit(_model(), Noisy(), _loss, cfg, state_path=tmp_path / "s.ckpt")


def test_lr_schedule_values() -> None:
    assert lr_factor(0, 10, "cosine") == 1.0
    assert lr_factor(5, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, "cosine") == pytest.approx(0.0)
    cos2 = 0.5 * (1 + math.cos(math.pi * 0.2))
    assert lr_factor(2, 10, "cosine", warmup_iters=4, warmup_ratio=1 / 3) == pytest.approx(
        (1 / 3 + 2 / 3 * 2 / 4) * cos2)
    steps = [lr_factor(s, 10, "step", milestones=(0.5, 0.8)) for s in range(10)]
    assert steps == pytest.approx([1] * 5 + [0.1] * 3 + [0.01] * 2)
    # through a real optimiser: the lr used at each step
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = build_scheduler(opt, 10, "step", warmup_iters=2, warmup_ratio=0.5,
                            milestones=(0.5,))
    used = []
    for _ in range(10):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert used == pytest.approx([0.1, 0.15] + [0.2] * 3 + [0.02] * 5)
    with pytest.raises(UserError, match="--schedule"):
        lr_factor(0, 10, "linear")


def test_no_weight_decay_on_batchnorm_and_biases() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(m, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(m[0].bias), id(m[1].weight),
                                                   id(m[1].bias), id(m[2].bias)}
    opt = build_optimizer(m, "rmsprop", 0.2, 4e-5)
    assert isinstance(opt, torch.optim.RMSprop) and opt.defaults["eps"] == 1.0
    with pytest.raises(UserError, match="--optimizer"):
        build_optimizer(m, "adam", 0.1)


def test_epoch_batches_shard_each_global_batch() -> None:
    one = EpochBatches(10, 4, seed=3)
    ranks = [EpochBatches(10, 4, rank=r, world=2, seed=3) for r in range(2)]
    for epoch in (0, 1):
        for s in [one, *ranks]:
            s.set_epoch(epoch)
        full = list(one)
        shares = [list(s) for s in ranks]
        assert len(full) == 2 == one.steps_per_epoch  # the incomplete batch is dropped
        for step, batch in enumerate(full):
            assert shares[0][step] + shares[1][step] == batch
            assert all(e == epoch for e, _ in batch)
    one.set_epoch(0)
    e0 = list(one)
    one.set_epoch(1)
    assert list(one) != e0
    one.set_epoch(0, start=1)
    assert list(one) == e0[1:] and len(one) == 1
    with pytest.raises(UserError, match="not divisible"):
        EpochBatches(10, 3, world=2)


def test_metrics_log_drops_lines_past_the_resume_point(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    log = MetricsLog(path)
    for s in range(1, 6):
        log.write(step=s, loss=float(s))
    with path.open("a") as f:
        f.write('{"step": 6, "lo')  # cut by a crash
    MetricsLog(path, resume_step=3).write(step=4, loss=40.0)
    assert [json.loads(x)["loss"] for x in path.read_text().splitlines()] == [1, 2, 3, 40]
    MetricsLog(path)  # a fresh run starts a fresh file
    assert path.read_text() == ""
    MetricsLog(path, enabled=False).write(step=1)  # other ranks write nothing
    assert path.read_text() == ""


def test_recalibrate_bn_averages_the_batches() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn)
    batches = [torch.randn(8, 3) * (i + 1) + i for i in range(4)]
    n = recalibrate_bn(model, iter(batches), lambda m, b: m(b))
    assert n == 4 and not model.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, torch.cat(batches).mean(0), atol=1e-6)
    var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    assert torch.allclose(bn.running_var, var, atol=1e-5)


def test_resume_logs_the_same_averages_when_log_every_spans_the_checkpoint(
        tmp_path: Path) -> None:
    # log_every=2 with a checkpoint after step 5: the step-6 line averages steps 5 and 6 in
    # both runs only if the unlogged window travels with the training state
    cfg = TrainConfig(**{**CFG.__dict__, "log_every": 2})
    fit(_model(), Noisy(), _loss, cfg, state_path=tmp_path / "a.ckpt",
        metrics_path=tmp_path / "a.jsonl")
    fit(_model(), Noisy(), _loss, cfg, state_path=tmp_path / "b.ckpt",
        metrics_path=tmp_path / "b.jsonl", stop_after=5)
    fit(_model(), Noisy(), _loss, cfg, state_path=tmp_path / "b.ckpt",
        metrics_path=tmp_path / "b.jsonl", resume=True)
    a, b = _records(tmp_path / "a.jsonl"), _records(tmp_path / "b.jsonl")
    assert [r["step"] for r in a] == [2, 3, 4, 6, 8, 9]
    assert a == b


def test_a_run_that_died_during_the_epoch_evaluation_logs_it_on_resume(tmp_path: Path) -> None:
    """The epoch's end is saved before on_epoch_end evaluates: a crash inside the evaluation
    must not leave that epoch without its metrics line after --resume."""
    def evaluate(epoch: int, model: nn.Module) -> dict:
        return {"AP": float(epoch)}

    crashed = {"done": False}

    def dies_once(epoch: int, model: nn.Module) -> dict:
        if epoch == 1 and not crashed["done"]:
            crashed["done"] = True
            raise RuntimeError("killed during the evaluation")
        return evaluate(epoch, model)

    fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "a.ckpt",
        metrics_path=tmp_path / "a.jsonl", on_epoch_end=evaluate)
    with pytest.raises(RuntimeError):
        fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "b.ckpt",
            metrics_path=tmp_path / "b.jsonl", on_epoch_end=dies_once)
    assert load_train_state(tmp_path / "b.ckpt")["epoch"] == 2  # saved before evaluating
    fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "b.ckpt",
        metrics_path=tmp_path / "b.jsonl", on_epoch_end=dies_once, resume=True)
    a, b = _records(tmp_path / "a.jsonl"), _records(tmp_path / "b.jsonl")
    assert [r["epoch"] for r in b if r["event"] == "epoch"] == [1, 2, 3]
    assert a == b
    # a resume from an epoch whose line was written evaluates nothing again
    calls: list[int] = []
    fit(_model(), Noisy(), _loss, CFG, state_path=tmp_path / "a.ckpt",
        metrics_path=tmp_path / "a.jsonl", resume=True,
        on_epoch_end=lambda e, m: calls.append(e) or evaluate(e, m))
    assert calls == [] and _records(tmp_path / "a.jsonl") == a
