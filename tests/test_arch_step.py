"""The cheap α/β steps: sampled gates are unbiased for the weighted sum's gradient on a toy
mixed op, they run only the sampled candidates of the real supernet, and checkpointed
activations give the full step's gradients exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_bn_
from test_supernet import tiny_space

from fnacli.nn.masks import channel_masks, combine
from fnacli.nn.supernet import Supernet, op_choices, width_choices
from fnacli.search import arch as A
from fnacli.search.gates import sampled_gates, two_sample_gate


def _toy(k: int = 5, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=g)
    outs = torch.randn(k, d, generator=g)  # o_k: the candidates' outputs
    read = torch.randn(d, generator=g)  # a linear read-out: L = <read, Σ_k p_k o_k>
    return logits, outs, read


def _grad(logits: torch.Tensor, weights_of: callable, outs: torch.Tensor, read: torch.Tensor
          ) -> torch.Tensor:
    a = logits.clone().requires_grad_(True)
    w = weights_of(torch.softmax(a, 0))
    (read @ (w @ outs)).backward()
    return a.grad


N = 3000  # samples per mean: the standard error decides the tolerance (4 of them)


def _mean_and_se(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.stack(samples)
    return t.mean(0), t.std(0) / len(samples) ** 0.5


def test_two_sample_gate_is_unbiased_on_a_toy_mixed_op() -> None:
    logits, outs, read = _toy()
    exact = _grad(logits, lambda p: p, outs, read)
    gen = torch.Generator().manual_seed(1)
    est, se = _mean_and_se([_grad(logits, lambda p: two_sample_gate(p, gen)[0], outs, read)
                            for _ in range(N)])
    # forward value is the sampled one-hot
    gate, used = two_sample_gate(torch.softmax(logits, 0), gen)
    assert float(gate.sum()) == 1.0 and float(gate[used[0]]) == 1.0
    assert ((est - exact).abs() <= 4 * se + 1e-6).all(), (est, exact, se)

    # a straight-through (GDAS-style) estimator, biased, fails the same tolerance
    def straight_through(p: torch.Tensor) -> torch.Tensor:
        k = int(torch.multinomial(p.detach(), 1, generator=gen))
        hard = torch.zeros_like(p)
        hard[k] = 1.0
        return hard - p.detach() * hard + p * hard

    st, st_se = _mean_and_se([_grad(logits, straight_through, outs, read) for _ in range(N)])
    assert ((st - exact).abs() > 4 * st_se + 1e-6).any()


def test_two_sample_gate_is_unbiased_for_channel_masks() -> None:
    outs_w = (2, 4, 6)
    masks = channel_masks(outs_w, "non-overlapping")
    g = torch.Generator().manual_seed(3)
    logits, feat, read = torch.randn(3, generator=g), torch.randn(6, generator=g), \
        torch.randn(6, generator=g)

    def grad(weights_of: callable) -> torch.Tensor:
        b = logits.clone().requires_grad_(True)
        w = combine(weights_of(torch.softmax(b, 0)), masks)
        (read @ (w * feat)).backward()
        return b.grad

    exact = grad(lambda p: p)
    est, se = _mean_and_se([grad(lambda p: two_sample_gate(p, g)[0]) for _ in range(N)])
    assert ((est - exact).abs() <= 4 * se + 1e-6).all(), (est, exact, se)
    assert float(se.max()) < 0.1 * float(exact.abs().max())  # the test has power


def _supernet(seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    net = Supernet(tiny_space())
    randomize_bn_(net)
    return net.train()


def _arch_grads(net: Supernet, x: torch.Tensor, logits: tuple, gate: callable | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    alpha = {k: v.clone().requires_grad_(True) for k, v in logits[0].items()}
    beta = {k: v.clone().requires_grad_(True) for k, v in logits[1].items()}
    a_p, b_p = A.probs(net.space, alpha, beta)
    if gate is None:
        net.set_weighted(a_p, b_p)
    else:
        net.set_weighted(*gate(a_p, b_p))
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        feats = net(x)
    loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in feats.values())
    loss.backward()
    return loss.detach(), [alpha[k].grad for k in alpha] + [beta[k].grad for k in beta]


def test_sampled_step_runs_only_the_sampled_candidates() -> None:
    net = _supernet()
    x = torch.randn(2, 3, 32, 32)
    logits = A.init_logits(net.space, seed=2, std=1.0)
    gen = torch.Generator().manual_seed(5)
    a_p, b_p = A.probs(net.space, *logits)
    a_g, b_g, support = sampled_gates(a_p, b_p, gen)
    calls: dict[str, int] = {}
    hooks = [op.register_forward_hook(lambda *_a, n=f"{s}.{i}.{c}": calls.__setitem__(n, 1))
             for s, layers in enumerate(net.stages) for i, layer in enumerate(layers)
             for c, op in ((c, op.dw) for c, op in layer.ops.items())]
    with torch.no_grad():
        net.set_weighted(a_g, b_g, support)
        sampled = net(x)
    for h in hooks:
        h.remove()
    for (s, i), used in support.items():
        cands = net.space.stages[s].layer_candidates(i)
        ran = {c for c in cands if f"{s}.{i}.{c}" in calls}
        assert ran == {cands[j] for j in used if cands[j] != "skip"}
    # the forward is the first sampled architecture: every candidate run with one-hot weights
    with torch.no_grad():
        net.set_weighted({k: v.detach() for k, v in a_g.items()},
                         {k: v.detach() for k, v in b_g.items()})
        hard = net(x)
    for k in sampled:
        assert torch.allclose(sampled[k], hard[k], atol=1e-6), k
    assert len(op_choices(net.space)) == len(support) and len(width_choices(net.space)) == len(b_g)


def test_checkpointed_activations_give_the_same_gradients() -> None:
    net = _supernet()
    x = torch.randn(2, 3, 32, 32)
    logits = A.init_logits(net.space, seed=4, std=1.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss, grads = _arch_grads(net, x, logits)
    net.load_state_dict(before)
    net.checkpoint_activations = True
    loss_c, grads_c = _arch_grads(net, x, logits)
    assert torch.equal(loss, loss_c)
    for g, gc in zip(grads, grads_c, strict=True):
        assert torch.allclose(g, gc, rtol=1e-5, atol=1e-7)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("step", ["bogus"])
def test_unknown_arch_step_is_refused(step: str) -> None:
    from fnacli.errors import UserError
    from fnacli.search.differentiable import SearchConfig
    from fnacli.train import TrainConfig

    cfg = SearchConfig(task="ssdlite", size=(64, 64), warmup_epochs=0, arch_step=step,
                       train=TrainConfig(epochs=1, batch_size=1, lr=0.1))
    with pytest.raises(UserError, match="--arch-step"):
        cfg.check()


def test_graphless_second_candidates_give_the_full_graphs_gradients() -> None:
    """With a support the second sampled candidate runs without a graph; α/β gradients are
    those of running every candidate with the same gates through autograd."""
    net = _supernet()
    x = torch.randn(2, 3, 32, 32)
    logits = A.init_logits(net.space, seed=6, std=1.0)
    draws = []

    def gates(a_p: dict, b_p: dict) -> tuple:
        gen = torch.Generator().manual_seed(9)
        a_g, b_g, support = sampled_gates(a_p, b_p, gen)
        draws.append(support)
        return a_g, b_g, support

    loss, grads = _arch_grads(net, x, logits, gates)
    loss_all, grads_all = _arch_grads(net, x, logits, lambda a, b: gates(a, b)[:2])
    assert draws[0] == draws[1] and any(len(s) == 2 for s in draws[0].values())
    assert torch.allclose(loss, loss_all, rtol=1e-6)
    for g, ga in zip(grads, grads_all, strict=True):
        assert torch.allclose(g, ga, rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().sum()) > 0 for g in grads)
