"""The architecture side of FNA's differentiable search: α/β, their optimiser and the cost
term. :meth:`Architect.step` is one α/β update (the shape of DARTS's ``architect.py``); the
weight steps around it are ``fnacli.train.fit``'s (``fnacli.search.differentiable``).

An α/β step runs the relaxed supernet (every candidate, β-mixed channel masks; or two
sampled candidates per layer and width with the unbiased gates of ``fnacli.search.gates``)
with all weights frozen and BN statistics left untouched, and minimises ``task loss + cost``
with Adam (betas (0.5, 0.999), α/β gradients clipped at norm 35).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fnacli.nn.supernet import Supernet, op_choices, width_choices
from fnacli.search import arch as A
from fnacli.search.gates import arch_step_generator, sampled_gates
from fnacli.spec import SpaceSpec
from fnacli.train import DistEnv, NonFinite, all_ok

if TYPE_CHECKING:
    from fnacli.search.differentiable import SearchConfig

GIGA = 1e9
ARCH_BETAS, ARCH_CLIP = (0.5, 0.999), 35.0


def cost_term(expected: torch.Tensor, form: str, lam: float, tau: float,
              target: float | None, gamma: float = 1.0, unit: float = GIGA) -> torch.Tensor:
    """The regulariser on the expected cost (absolute MAdds; or ns with ``unit`` 1e6, C in
    ms): FNA's ``λ·log_τ(γ·C)`` or Jung et al.'s ``λ·γ·C``; with a target only the excess
    counts (see ``fnacli.search.differentiable``)."""
    g = gamma * expected / unit
    if target is None:
        return lam * (torch.log(g) / math.log(tau) if form == "log" else g)
    t = gamma * target / unit
    if form == "log":
        return lam * torch.relu(torch.log(g / t)) / math.log(tau)
    return lam * torch.relu(g - t)


class ArchParams(nn.Module):
    """α/β logits as parameters (in ``op_choices`` / ``width_choices`` order)."""

    def __init__(self, space: SpaceSpec, alpha: A.AlphaDict, beta: A.BetaDict) -> None:
        super().__init__()
        self.space = space
        self.alpha_keys = [(s, i) for s, i, _ in op_choices(space)]
        self.beta_keys = [s for s, _ in width_choices(space)]
        self.alpha = nn.ParameterList([nn.Parameter(alpha[k].clone()) for k in self.alpha_keys])
        self.beta = nn.ParameterList([nn.Parameter(beta[k].clone()) for k in self.beta_keys])

    def logits(self) -> tuple[A.AlphaDict, A.BetaDict]:
        return (dict(zip(self.alpha_keys, self.alpha, strict=True)),
                dict(zip(self.beta_keys, self.beta, strict=True)))

    def probs(self, min_depth: int = 0) -> tuple[A.AlphaDict, A.BetaDict]:
        return A.probs(self.space, *self.logits(), min_depth)

    def tensors(self) -> dict[str, torch.Tensor]:
        return A.to_tensors(*self.logits())


class _Frozen:
    """Weights without gradients and BN statistics left as they are (momentum 0), for α/β
    steps; restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> _Frozen:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)
        self.bns = [(m, m.momentum) for m in self.model.modules() if isinstance(m, _BatchNorm)]
        for m, _ in self.bns:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for m, mom in self.bns:
            m.momentum = mom


class Architect:
    """α/β (``arch``), their Adam optimiser and the cost term of a search.

    ``model`` is the detector around ``supernet`` (unwrapped from DDP: the α/β step runs
    outside it); ``loss(model, batch, device)`` its task loss; ``expected_cost(α probs, β
    probs)`` the expected cost C in the table's unit (MAdds, or ns of latency); ``lam`` λ.
    """

    def __init__(self, arch: ArchParams, model: nn.Module, supernet: Supernet,
                 loss: Callable[[nn.Module, Any, torch.device], dict[str, torch.Tensor]],
                 expected_cost: Callable[[A.AlphaDict, A.BetaDict], torch.Tensor],
                 lam: float, cfg: SearchConfig, env: DistEnv) -> None:
        self.arch, self.model, self.supernet, self.loss = arch, model, supernet, loss
        self.expected_cost, self.lam, self.cfg, self.env = expected_cost, lam, cfg, env
        self.optimizer = torch.optim.Adam(arch.parameters(), lr=cfg.arch_lr, betas=ARCH_BETAS,
                                          weight_decay=cfg.arch_weight_decay)
        self.use_amp = cfg.train.amp and env.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.steps = 0  # α/β steps done, all runs

    def step(self, batch: Any) -> dict[str, float]:
        """One α/β update on ``batch`` (of the α/β images); returns its loss terms."""
        self.model.train()
        with _Frozen(self.model):
            loss, terms = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        if self.env.distributed:  # the step ran outside DDP: average α/β gradients here
            for p in self.arch.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.env.world
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.arch.parameters(), ARCH_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps += 1
        return terms

    def _loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Task loss + cost term of the relaxed supernet on ``batch``; the supernet is left
        on the argmax path."""
        cfg, env = self.cfg, self.env
        a_p, b_p = self.arch.probs(cfg.min_depth)
        if cfg.arch_step == "sampled":  # each process its own draws: they average
            gen = arch_step_generator(cfg.train.seed + 7919 * env.rank, self.steps)
            self.supernet.set_weighted(*sampled_gates(a_p, b_p, gen))
        else:
            self.supernet.set_weighted(a_p, b_p)
        try:
            with torch.autocast(env.device.type, enabled=self.use_amp):
                losses = self.loss(self.model, batch, env.device)
        finally:
            self.supernet.set_path(A.argmax_path(a_p, b_p))
        task_loss = sum(losses.values())
        expected = self.expected_cost(a_p, b_p)
        cost = cost_term(expected, cfg.cost_form, self.lam, cfg.tau, cfg.cost_target(),
                         cfg.applied_gamma, cfg.cost_unit())
        loss = task_loss + cost.to(task_loss.dtype)
        if not all_ok(bool(torch.isfinite(loss).item()), env):
            raise NonFinite("α/β loss", loss, "α/β", "Lower --lr or --lambda, or add warm-up")
        terms = {"arch_loss": float(loss.detach()), "task_loss_b": float(task_loss.detach()),
                 "cost_term": float(cost.detach())}
        if cfg.cost == "latency":
            terms["expected_latency_ms"] = float(expected.detach()) / 1e6
        return loss, terms

    def state_dict(self) -> dict:
        """α/β, the optimiser's and the scaler's state, the step count (for the training
        state: a resumed search goes on exactly)."""
        return {"arch": self.arch.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.use_amp else {},
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.arch.load_state_dict(state["arch"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.use_amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.steps = int(state["steps"])
