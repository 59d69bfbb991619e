"""The supernet: single paths (and one-hot α/β under overlapping masks) reproduce the seed and
every selected architecture exactly; Jung et al.'s non-overlapping masks weight each channel
segment by its own β; one shared block per stage whatever the number of channel candidates; it
plugs into detectors."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from conftest import randomize_bn_

from fnacli.nn.backbone import SSD_TAP, Backbone
from fnacli.nn.supernet import (
    Path,
    Supernet,
    op_choices,
    path_to_arch,
    subnet_state,
    width_choices,
)
from fnacli.remap import supernet_state_from_seed
from fnacli.search import arch as A
from fnacli.spec import ArchSpec, SpaceSpec

CANDS = ["k3_e3", "k3_e6", "k5_e6", "skip"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # many tiny convs of ever-new shapes: extra threads only contend with other test workers
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_space(cands: list[str] = CANDS) -> SpaceSpec:
    """Seven stages like MobileNetV2 (so MobileNetV2-layout seeds remap onto it), tiny widths,
    channel candidates in most stages (stage 2 has a fixed width after a searched one), and
    stage 3 -> 4 (stride 1) able to pick equal widths."""
    st = [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
          {"out": [8, 12, 16], "stride": 2, "layers": 3, "ops": cands},
          {"out": 16, "stride": 2, "layers": 2, "ops": cands},
          {"out": [12, 16], "stride": 2, "layers": 3, "ops": cands},
          {"out": [16, 24], "stride": 1, "layers": 2, "ops": cands},
          {"out": [32, 40], "stride": 2, "layers": 2, "ops": cands},
          {"out": [40, 48], "stride": 1, "layers": 1, "ops": ["k3_e6", "k5_e3"]}]
    return SpaceSpec.from_dict({"schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
                                "stages": st, "head": {"out": 64}})


def tiny_seed() -> ArchSpec:
    e6 = ["k3_e6"]
    st = [{"out": 8, "stride": 1, "ops": ["k3_e1"]}, {"out": 12, "stride": 2, "ops": e6 * 2},
          {"out": 16, "stride": 2, "ops": e6 * 2}, {"out": 16, "stride": 2, "ops": e6 * 3},
          {"out": 24, "stride": 1, "ops": e6 * 2}, {"out": 40, "stride": 2, "ops": e6 * 2},
          {"out": 48, "stride": 1, "ops": e6}]
    return ArchSpec.from_dict({"schema": "fnacli/arch@1", "stem": {"out": 8, "stride": 2},
                               "stages": st, "head": {"out": 64}})


def random_supernet(space: SpaceSpec, masks: str = "non-overlapping", seed: int = 0,
                    mask_scope: str = "output") -> Supernet:
    torch.manual_seed(seed)
    return randomize_bn_(Supernet(space, masks, mask_scope=mask_scope), seed).eval()


def compare(ref: dict, got: dict, tol: float = 1e-5) -> None:
    """Same maps, same order; the supernet's extra (padded) channels are exactly zero."""
    assert list(got) == list(ref)
    for k, r in ref.items():
        c = r.shape[1]
        assert torch.allclose(got[k][:, :c], r, atol=tol, rtol=0), k
        assert got[k][:, c:].abs().max().item() == 0.0 if got[k].shape[1] > c else True, k


@pytest.mark.parametrize("masks", ["non-overlapping", "overlapping"])
def test_one_hot_on_the_seeds_own_choices_is_the_seed(masks: str) -> None:
    space, seed_spec = tiny_space(), tiny_seed()
    torch.manual_seed(1)
    seed = randomize_bn_(Backbone(seed_spec), 1).eval()
    # the block scope: with it (and overlapping masks) one-hot β is the selected network
    net = Supernet(space, masks, mask_scope="block")
    net.load_state_dict(supernet_state_from_seed(space, seed.state_dict(), seed_spec))
    net.eval()
    path = A.path_of_arch(space, seed_spec)
    assert path_to_arch(space, path) == seed_spec
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = seed(x)
        assert ref["stage6"].abs().max() > 1e-2  # the comparison is not between zeros
        net.set_path(path)
        compare(ref, net(x))
        net.set_weighted(*A.one_hot(space, path))
        if masks == "overlapping":
            compare(ref, net(x))
        else:  # the paper's masks: one-hot β keeps only the chosen segment, not the prefix
            got = net(x)["stage1"]  # seed width 12 of (8, 12, 16): segment 8..11 only
            assert got[:, :8].abs().max() == 0 and got[:, 8:12].abs().max() > 1e-3


def test_candidates_are_remapped_from_the_seed() -> None:
    space, seed_spec = tiny_space(), tiny_seed()
    torch.manual_seed(2)
    seed = Backbone(seed_spec).state_dict()
    state = supernet_state_from_seed(space, seed, seed_spec, widen="zeros")
    # e3 takes the seed e6 layer's first hidden channels (the width rule)
    e3 = state["stages.2.0.ops.k3_e3.expand.conv.weight"]
    assert e3.shape == (16 * 3, 16, 1, 1)  # stage 2's input is up to 16 wide
    assert torch.equal(e3[:, :12], seed["stages.2.0.expand.conv.weight"][:48])
    assert e3[:, 12:].abs().sum() == 0  # inputs the seed does not have contribute nothing
    # the default (Jung et al.): small noise there instead, the copied part unchanged
    noisy = supernet_state_from_seed(space, seed, seed_spec)
    noisy = noisy["stages.2.0.ops.k3_e3.expand.conv.weight"]
    assert torch.equal(noisy[:, :12], e3[:, :12]) and noisy[:, 12:].abs().min() > 0
    assert noisy[:, 12:].std() < 0.05 * e3[:, :12].std()
    # k5 puts the seed's 3x3 kernel in the centre, zeros around
    k5 = state["stages.2.1.ops.k5_e6.dw.conv.weight"]
    assert torch.equal(k5[:96, :, 1:4, 1:4], seed["stages.2.1.dw.conv.weight"])
    assert k5[:, :, 0].abs().sum() == 0
    # extra depth copies the stage's last seed layer
    assert torch.equal(state["stages.1.2.ops.k3_e6.dw.conv.weight"][:72],
                       seed["stages.1.1.dw.conv.weight"])


@pytest.mark.parametrize("masks", ["non-overlapping", "overlapping"])
def test_every_path_equals_its_own_backbone(masks: str) -> None:
    """Sliced paths, masked one-hot paths and the stand-alone network agree, in eval and in
    train mode (batch statistics, running-statistic updates)."""
    space = tiny_space()
    net = random_supernet(space, masks, mask_scope="block")
    rng = random.Random(0)
    x = torch.randn(2, 3, 64, 64)
    seen_equal_residual = False
    for trial in range(8):
        path = Path({(s, i): rng.randrange(len(c)) for s, i, c in op_choices(space)},
                    {s: rng.randrange(len(o)) for s, o in width_choices(space)})
        arch = path_to_arch(space, path)
        seen_equal_residual |= arch.stages[3].out == arch.stages[4].out
        ref_net = Backbone(arch)
        ref_net.load_state_dict(subnet_state(net, path))
        train = trial % 3 == 2
        ref_net.train(train)
        net.train(train)
        with torch.no_grad():
            ref = ref_net(x)
            net.set_path(path)
            compare(ref, net(x))
            if train:  # the running statistics of the used channels moved the same way
                sub, want = subnet_state(net, path), ref_net.state_dict()
                assert all(torch.allclose(sub[k].float(), want[k].float(), atol=1e-6)
                           for k in want)
                continue
            if masks == "overlapping":  # non-overlapping: see test_mask_kinds_differ...
                net.set_weighted(*A.one_hot(space, path))
                compare(ref, net(x))
    assert seen_equal_residual  # the first-layer shortcut at equal widths was exercised


def test_mask_kinds_differ_in_outputs_and_beta_gradients() -> None:
    """Same weights, same β: Jung et al.'s and FBNetV2's relaxations are different networks
    (before the fix both were the overlapping one, equal to 7e-6 / gradients to 1e-12)."""
    space = tiny_space()
    x = torch.randn(2, 3, 64, 64)
    outs, grads = {}, {}
    for masks in ("non-overlapping", "overlapping"):
        net = random_supernet(space, masks, seed=3)
        logits_a, logits_b = A.init_logits(space, 5, 0.5)
        for t in logits_b.values():
            t.requires_grad_(True)
        net.set_weighted(*A.probs(space, logits_a, logits_b))
        feats = net(x)
        outs[masks] = feats["head"].detach()
        feats["head"].square().mean().backward()
        grads[masks] = torch.cat([logits_b[s].grad for s in sorted(logits_b)])
    assert (outs["non-overlapping"] - outs["overlapping"]).abs().max() > 1e-2
    rel = ((grads["non-overlapping"] - grads["overlapping"]).norm()
           / grads["overlapping"].norm())
    assert rel > 0.1


def test_non_overlapping_channel_weights_in_the_supernet() -> None:
    """The vector the masked forward multiplies a stage's output by is the paper's: channel
    segment k times softmax(β)_k."""
    space = tiny_space()
    net = Supernet(space, "non-overlapping")
    p = torch.tensor([0.5, 0.3, 0.2])
    w = net._channel_weights((8, 12, 16), p, 1, torch.zeros(1)).flatten()
    assert torch.equal(w, torch.tensor([0.5] * 8 + [0.3] * 4 + [0.2] * 4))
    w6 = net._channel_weights((8, 12, 16), p, 6, torch.zeros(1)).flatten()  # hidden, e6
    assert torch.equal(w6, torch.tensor([0.5] * 48 + [0.3] * 24 + [0.2] * 24))


def test_shared_block_runs_once_whatever_the_number_of_widths() -> None:
    """Weighted mode: each candidate's project conv runs exactly once per forward, for 1 or 9
    channel candidates (one shared max-width block times the mask mix)."""
    def calls(outs: list[int]) -> dict[str, int]:
        space = SpaceSpec.from_dict({"schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
                                     "stages": [{"out": outs, "stride": 2, "layers": 2,
                                                 "ops": ["k3_e3", "k5_e6", "skip"]}]})
        net = Supernet(space)
        counts: dict[str, int] = {}
        for name, m in net.named_modules():
            if name.endswith("project.conv"):
                counts[name] = 0
                m.register_forward_hook(
                    lambda mod, i, o, n=name: counts.__setitem__(n, counts[n] + 1))
        a, b = A.probs(space, *A.init_logits(space, 0))
        net.set_weighted(a, b)
        net(torch.randn(1, 3, 32, 32))
        return counts

    one, many = calls([16]), calls(list(range(8, 25, 2)))
    assert list(one) == list(many) and len(one) == 4  # 2 layers x 2 non-skip candidates
    assert set(one.values()) == {1} and set(many.values()) == {1}


def test_weighted_mode_gives_gradients_to_every_alpha_and_beta() -> None:
    space = tiny_space()
    net = random_supernet(space).train()
    logits_a, logits_b = A.init_logits(space, 0)
    for t in [*logits_a.values(), *logits_b.values()]:
        t.requires_grad_(True)
    net.set_weighted(*A.probs(space, logits_a, logits_b))
    feats = net(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for f in feats.values()).backward()
    for t in [*logits_a.values(), *logits_b.values()]:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_ssd_tap_is_zero_padded_to_the_widest_expansion() -> None:
    space = tiny_space()
    net = random_supernet(space)
    # the first stride-32 layer is stage 5's first: input up to 24 channels, expansion up to 6
    assert net.tap == (5, 0) and net.feature_channels[SSD_TAP] == 24 * 6
    path = A.path_of_arch(space, tiny_seed())
    path.ops[(5, 0)] = space.stages[5].layer_candidates(0).index("k3_e3")
    path.widths[4] = 0  # 16 channels into the tap layer
    net.set_path(path)
    with torch.no_grad():
        tap = net(torch.randn(1, 3, 64, 64))[SSD_TAP]
    assert tap.shape[1] == 144
    assert tap[:, 48:].abs().max() == 0 and tap[:, :48].abs().max() > 0


def _two_layer_space() -> SpaceSpec:
    """One searchable stage of two layers (stride 2, widths 8/12/16): layer 1's input carries
    the stage's β, so a hidden-channel mask would show there."""
    return SpaceSpec.from_dict({"schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
                                "stages": [{"out": [8, 12, 16], "stride": 2, "layers": 2,
                                            "ops": ["k3_e6", "skip"]}]})


def _eq2_reference(net: Supernet, x: torch.Tensor, p: torch.Tensor, hidden: bool
                   ) -> torch.Tensor:
    """Jung et al.'s eq. 2 written out: each block at full width, its output times
    Σ_k p_k·M_k (non-overlapping segments); with ``hidden`` also the hidden channels (after the
    expansion and the depthwise conv) by the input's weights at 6x (the ``block`` scope)."""
    w = torch.cat([p[0].expand(8), p[1].expand(4), p[2].expand(4)]).view(1, -1, 1, 1)
    w6 = torch.cat([p[0].expand(48), p[1].expand(24), p[2].expand(24)]).view(1, -1, 1, 1)
    b0, b1 = (net.stages[0][i].ops["k3_e6"] for i in (0, 1))
    y0 = b0.project(b0.dw(b0.expand(net.stem(x)))) * w  # stride 2: no shortcut
    h = b1.expand(y0) * (w6 if hidden else 1)
    h = b1.dw(h) * (w6 if hidden else 1)
    return b1.project(h) * w + y0  # stride 1 inside the stage: the shortcut


@pytest.mark.parametrize("scope", ["output", "block"])
def test_relaxed_width_masks_the_output_only_by_default(scope: str) -> None:
    """The default mask scope is the paper's eq. 2 (the block's output alone), in value and in
    β gradient; ``block`` (fnacli's earlier rule, which also masked the hidden channels) is the
    option. Before the fix the default masked the hidden channels too: 0.118 off."""
    space = _two_layer_space()
    torch.manual_seed(0)
    net = randomize_bn_(Supernet(space) if scope == "output"
                        else Supernet(space, mask_scope="block"), 0).eval()
    logits = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    ref_logits = logits.detach().clone().requires_grad_(True)
    a, _ = A.probs(space, *A.init_logits(space, 0, 0.0))
    x = torch.randn(2, 3, 32, 32)
    k3 = {k: torch.nn.functional.one_hot(torch.tensor(0), len(v)).float() for k, v in a.items()}
    net.set_weighted(k3, {0: logits.softmax(0)})
    got = net(x)["stage0"]
    want = _eq2_reference(net, x, ref_logits.softmax(0), hidden=scope == "block")
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    other = _eq2_reference(net, x, ref_logits.softmax(0).detach(), hidden=scope == "output")
    assert (got - other).abs().max() > 1e-2  # the two scopes are different networks
    got.square().mean().backward()
    want.square().mean().backward()
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-6, rtol=1e-4)


def test_a_single_path_stays_exact_under_the_output_scope() -> None:
    """A hard width still cuts the hidden channels (the masked forward that SyncBatchNorm
    runs): the selected network, whatever the relaxed scope."""
    space = tiny_space()
    net = random_supernet(space)
    rng = random.Random(1)
    x = torch.randn(2, 3, 64, 64)
    for _ in range(3):
        path = Path({(s, i): rng.randrange(len(c)) for s, i, c in op_choices(space)},
                    {s: rng.randrange(len(o)) for s, o in width_choices(space)})
        ref_net = Backbone(path_to_arch(space, path)).eval()
        ref_net.load_state_dict(subnet_state(net, path))
        net.set_path(path)
        with torch.no_grad():
            compare(ref_net(x), net._forward_masked(x))
