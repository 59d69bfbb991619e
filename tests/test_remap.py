"""Parameter remapping: function preservation where the math allows it, the depth/width/
kernel rules, the property that any target loads strictly, and `fnacli remap`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import randomize_bn_, torchvision_seed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fnacli.checkpoint import from_state_dict, read_checkpoint
from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone
from fnacli.remap import remap_kernel, remap_state, select_channels
from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2

TOL = 1e-5
TV_STAGE_ENDS = [1, 3, 6, 10, 13, 16, 17]  # torchvision features.N ending each stage


def _backbone(spec: ArchSpec, state: dict) -> Backbone:
    net = Backbone(spec).eval()
    net.load_state_dict(state, strict=True)
    return net


def _features(net: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return dict(net(x))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _with_ops(spec: ArchSpec, fn: object) -> ArchSpec:
    stages = tuple(Stage(s.out, s.stride, tuple(fn(o) for o in s.ops)) for s in spec.stages)
    return replace(spec, stages=stages)


def _with_stage(spec: ArchSpec, s: int, **changes: object) -> ArchSpec:
    stages = list(spec.stages)
    stages[s] = replace(stages[s], **changes)
    return replace(spec, stages=tuple(stages))


@pytest.fixture(scope="module")
def tv035() -> tuple[dict, ArchSpec]:
    return from_state_dict(torchvision_seed(0.35, seed=3).state_dict(), "tv0.35")


# -- the seed's own architecture reproduces the seed ---------------------------------------------
@pytest.mark.parametrize("width", [1.0, 0.75])
def test_torchvision_remapped_to_itself_gives_the_same_features(width: float) -> None:
    model = torchvision_seed(width, seed=1)
    tensors, spec = from_state_dict(model.state_dict(), "tv")
    state, _ = remap_state(tensors, spec, spec)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feats = _features(_backbone(spec, state), x)
    ref, h = [], x
    with torch.no_grad():
        for i, layer in enumerate(model.features):
            if i == 14:  # first stride-32 layer: SSDLite taps its expansion output
                tap = layer.conv[0](h)
            h = layer(h)
            ref.append(h)
    for s, end in enumerate(TV_STAGE_ENDS):
        assert _maxdiff(feats[f"stage{s}"], ref[end]) <= TOL, s
    assert _maxdiff(feats["head"], ref[18]) <= TOL
    assert _maxdiff(feats["ssd_tap"], tap) <= TOL
    # and the whole classifier agrees once the ImageNet head is bolted on
    assert feats["stage3"].abs().max() > 0.1  # the comparison is not between zeros


def test_timm_remapped_to_itself_gives_the_same_features() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    model = randomize_bn_(timm.create_model("mobilenetv2_100"), seed=2).eval()
    tensors, spec = from_state_dict(model.state_dict(), "timm")
    state, _ = remap_state(tensors, spec, spec)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    feats = _features(_backbone(spec, state), x)
    with torch.no_grad():
        h = model.bn1(model.conv_stem(x))
        for s, stage in enumerate(model.blocks):
            if s == 5:
                tap = stage[0].bn1(stage[0].conv_pw(h))
            h = stage(h)
            assert _maxdiff(feats[f"stage{s}"], h) <= TOL, s
        assert _maxdiff(feats["head"], model.forward_features(x)) <= TOL
    assert _maxdiff(feats["ssd_tap"], tap) <= TOL


def test_remap_to_itself_is_an_exact_copy(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    for width in ("first", "bn", "std", "l1"):
        state, report = remap_state(tensors, spec, spec, width=width)
        assert list(state) == list(tensors)
        assert all(torch.equal(state[k], tensors[k]) for k in tensors)
    assert [r["sources"] for r in report] == [list(range(s.depth)) for s in spec.stages]
    assert report[1]["seed"]["ops"] == report[1]["new"]["ops"] == ["k3_e6", "k3_e6"]


# -- function-preserving changes ----------------------------------------------------------------
@pytest.mark.parametrize("k", [5, 7])
def test_enlarging_every_kernel_keeps_the_features(tv035: tuple[dict, ArchSpec], k: int) -> None:
    tensors, spec = tv035
    big = _with_ops(spec, lambda o: Op(k, o.expand))
    state, _ = remap_state(tensors, spec, big)
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(2))
    ref = _features(_backbone(spec, tensors), x)
    got = _features(_backbone(big, state), x)
    assert set(got) == set(ref)
    for name in ref:
        assert _maxdiff(got[name], ref[name]) <= TOL, name
    w = state["stages.2.1.dw.conv.weight"]
    assert w.shape[-1] == k and torch.equal(w[..., k // 2 - 1:k // 2 + 2, k // 2 - 1:k // 2 + 2],
                                            tensors["stages.2.1.dw.conv.weight"])


@pytest.mark.parametrize("s", [1, 2, 4])
def test_widening_a_stage_with_zeros_keeps_the_following_stages(tv035: tuple[dict, ArchSpec],
                                                                 s: int) -> None:
    tensors, spec = tv035
    wide = _with_stage(spec, s, out=spec.stages[s].out + 12)
    state, _ = remap_state(tensors, spec, wide, widen="zeros")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref = _features(_backbone(spec, tensors), x)
    got = _features(_backbone(wide, state), x)
    n = spec.stages[s].out
    assert _maxdiff(got[f"stage{s}"][:, :n], ref[f"stage{s}"]) <= TOL
    assert got[f"stage{s}"][:, n:].abs().max() == 0  # the new channels are dead
    for t in range(s + 1, len(spec.stages)):
        assert _maxdiff(got[f"stage{t}"], ref[f"stage{t}"]) <= TOL, t
    assert _maxdiff(got["head"], ref["head"]) <= TOL


def test_wider_stem_head_and_expansion_keep_the_features(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    target = _with_ops(replace(spec, stem_out=spec.stem_out + 8, head_out=spec.head_out + 64),
                       lambda o: Op(o.kernel, 8 if o.expand == 6 else o.expand))
    state, _ = remap_state(tensors, spec, target, widen="zeros")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    ref = _features(_backbone(spec, tensors), x)
    got = _features(_backbone(target, state), x)
    for name in ref:
        if name == "head":
            assert _maxdiff(got[name][:, : spec.head_out], ref[name]) <= TOL
        elif name == "ssd_tap":
            assert _maxdiff(got[name][:, : ref[name].shape[1]], ref[name]) <= TOL
        else:
            assert _maxdiff(got[name], ref[name]) <= TOL, name


def _kill_hidden(t: dict, layer: str, dead: torch.Tensor) -> None:
    """Make hidden channels ``dead`` of a layer irrelevant: expansion output 0 (and every
    score of them 0), and the projection ignores them."""
    t[f"{layer}.expand.conv.weight"][dead] = 0
    t[f"{layer}.expand.bn.weight"][dead] = 0
    t[f"{layer}.expand.bn.bias"][dead] = 0
    t[f"{layer}.project.conv.weight"][:, dead] = 0


def _kill_stage_channels(tensors: dict, spec: ArchSpec, s: int, dead: torch.Tensor) -> dict:
    """Make channels ``dead`` of stage s's output exactly 0 in every layer of the stage, and
    the hidden channels its consumers lose when the stage narrows (their hidden width is
    in x expansion) irrelevant too."""
    t = {k: v.clone() for k, v in tensors.items()}
    for i in range(spec.stages[s].depth):
        p = f"stages.{s}.{i}.project"
        t[f"{p}.conv.weight"][dead] = 0
        for name in ("bn.weight", "bn.bias", "bn.running_mean"):
            t[f"{p}.{name}"][dead] = 0
    consumers = [f"stages.{s}.{i}" for i in range(1, spec.stages[s].depth)] + [f"stages.{s + 1}.0"]
    g = torch.Generator().manual_seed(9)
    for layer in consumers:
        hidden = t[f"{layer}.dw.conv.weight"].shape[0]
        drop = hidden // spec.stages[s].out * len(dead)
        _kill_hidden(t, layer, torch.randperm(hidden, generator=g)[:drop])
    return t


@pytest.mark.parametrize("width", ["bn", "std", "l1"])
def test_narrowing_drops_dead_channels_and_keeps_the_function(tv035: tuple[dict, ArchSpec],
                                                              width: str) -> None:
    seed_tensors, spec = tv035
    # 32 -> 22 channels (not 24: stage 3 has 24, and in == out would add a residual to the
    # stage's first layer, a different function)
    s, n = 4, spec.stages[4].out
    dead = torch.randperm(n, generator=torch.Generator().manual_seed(5))[:10]
    tensors = _kill_stage_channels(seed_tensors, spec, s, dead)
    narrow = _with_stage(spec, s, out=n - 10)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    ref = _features(_backbone(spec, tensors), x)
    state, _ = remap_state(tensors, spec, narrow, width=width)
    got = _features(_backbone(narrow, state), x)
    alive = torch.tensor([c for c in range(n) if c not in set(dead.tolist())])
    assert _maxdiff(got[f"stage{s}"], ref[f"stage{s}"][:, alive]) <= TOL
    for t in range(s + 1, len(spec.stages)):
        assert _maxdiff(got[f"stage{t}"], ref[f"stage{t}"]) <= TOL, (width, t)
    # the FNA default (first channels) cannot know which ones are dead
    first, _ = remap_state(tensors, spec, narrow, width="first")
    assert _maxdiff(_features(_backbone(narrow, first), x)["head"], ref["head"]) > 1e-3


def test_e6_to_e3_keeps_the_important_hidden_channels(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    tensors = {k: v.clone() for k, v in tensors.items()}
    p = "stages.3.2"
    hidden = tensors[f"{p}.dw.conv.weight"].shape[0]  # 6 x 24
    dead = torch.randperm(hidden, generator=torch.Generator().manual_seed(7))[: hidden // 2]
    _kill_hidden(tensors, p, dead)
    ops = list(spec.stages[3].ops)
    ops[2] = Op(3, 3)
    target = _with_stage(spec, 3, ops=tuple(ops))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    ref = _features(_backbone(spec, tensors), x)
    state, _ = remap_state(tensors, spec, target, width="bn")
    got = _features(_backbone(target, state), x)
    for t in range(3, len(spec.stages)):
        assert _maxdiff(got[f"stage{t}"], ref[f"stage{t}"]) <= TOL, t
    alive = torch.tensor(sorted(set(range(hidden)) - set(dead.tolist())))
    assert torch.equal(state[f"{p}.dw.conv.weight"], tensors[f"{p}.dw.conv.weight"][alive])


# -- the rules, tensor by tensor -----------------------------------------------------------------
def test_deeper_stages_copy_the_last_layer(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    target = _with_stage(_with_stage(spec, 1, ops=(Op(3, 6),) * 4), 6, ops=(Op(3, 6),) * 2)
    state, report = remap_state(tensors, spec, target, widen="zeros")
    assert report[1]["sources"] == [0, 1, 1, 1] and report[6]["sources"] == [0, 0]
    for i in (2, 3):
        for k in [k for k in tensors if k.startswith("stages.1.1.")]:
            assert torch.equal(state[k.replace("stages.1.1.", f"stages.1.{i}.")], tensors[k]), k
    Backbone(target).load_state_dict(state, strict=True)
    # a one-layer seed stage: the copy of layer 0 reads the stage's own (wider) output now,
    # so its hidden width is 112x6 instead of 56x6: the seed's channels come first
    h = tensors["stages.6.0.dw.conv.weight"].shape[0]
    assert state["stages.6.1.dw.conv.weight"].shape[0] == 2 * h
    assert torch.equal(state["stages.6.1.dw.conv.weight"][:h], tensors["stages.6.0.dw.conv.weight"])
    assert torch.equal(state["stages.6.1.dw.bn.running_var"][:h],
                       tensors["stages.6.0.dw.bn.running_var"])
    assert torch.equal(state["stages.6.1.project.conv.weight"][:, :h],
                       tensors["stages.6.0.project.conv.weight"])
    assert state["stages.6.1.project.conv.weight"][:, h:].abs().max() == 0
    # shallower: the first layers are kept
    short = _with_stage(spec, 3, ops=(Op(3, 6),) * 2)
    state, report = remap_state(tensors, spec, short)
    assert report[3]["sources"] == [0, 1]
    assert torch.equal(state["stages.3.1.project.conv.weight"],
                       tensors["stages.3.1.project.conv.weight"])


def test_narrowing_with_first_takes_the_first_channels_everywhere(
        tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    target = _with_stage(spec, 2, out=12)
    state, _ = remap_state(tensors, spec, target)
    assert torch.equal(state["stages.2.1.project.conv.weight"],
                       tensors["stages.2.1.project.conv.weight"][:12, :72])
    # the next layer's input side follows the same channels; its hidden width is 12*6 now
    assert torch.equal(state["stages.2.1.expand.conv.weight"],
                       tensors["stages.2.1.expand.conv.weight"][:72, :12])
    assert torch.equal(state["stages.3.0.expand.conv.weight"],
                       tensors["stages.3.0.expand.conv.weight"][:72, :12])
    assert torch.equal(state["stages.2.0.project.bn.running_mean"],
                       tensors["stages.2.0.project.bn.running_mean"][:12])


def test_select_channels() -> None:
    scores = torch.tensor([0.5, 3.0, 1.0, 3.0, 0.1])
    assert select_channels(scores, 2).tolist() == [1, 3]
    assert select_channels(scores, 3).tolist() == [1, 2, 3]  # ascending order, not by score
    assert select_channels(torch.tensor([1.0, 1.0, 1.0]), 2).tolist() == [0, 1]  # ties: lower
    assert select_channels(None, 3).tolist() == [0, 1, 2]
    assert select_channels(scores, 9).tolist() == [0, 1, 2, 3, 4]


def test_kernel_rules() -> None:
    w = torch.arange(9.0).view(1, 1, 3, 3)
    big, filled = remap_kernel(w, 7, "center")
    assert torch.equal(big[0, 0, 2:5, 2:5], w[0, 0]) and big.sum() == w.sum()
    assert int((~filled).sum()) == 9 and not filled[0, 0, 3, 3]
    dil, _ = remap_kernel(w, 7, "dilate")  # ratio 3: taps at 0, 3, 6
    assert torch.equal(dil[0, 0, ::3, ::3], w[0, 0]) and dil.sum() == w.sum()
    dil5, _ = remap_kernel(w, 5, "dilate")
    assert torch.equal(dil5[0, 0, ::2, ::2], w[0, 0])
    w5 = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(remap_kernel(w5, 7, "dilate")[0], remap_kernel(w5, 7, "center")[0])
    small, filled = remap_kernel(w5, 3, "center")
    assert torch.equal(small[0, 0], w5[0, 0, 1:4, 1:4]) and not filled.any()
    assert torch.equal(remap_kernel(w5, 3, "dilate")[0][0, 0], w5[0, 0, ::2, ::2])


def test_noise_touches_only_new_channels_and_is_seeded(tv035: tuple[dict, ArchSpec]) -> None:
    """The default widening rule: N(0, (0.01·rms)²) on the entries of added channels only;
    copied weights, kernel borders and BN stay exact."""
    tensors, spec = tv035
    target = _with_ops(_with_stage(spec, 2, out=24), lambda o: Op(5, o.expand))
    clean, _ = remap_state(tensors, spec, target, widen="zeros")
    a, _ = remap_state(tensors, spec, target, seed=1)  # the default: widen="noise", 0.01
    b, _ = remap_state(tensors, spec, target, noise=0.01, seed=1)
    c, _ = remap_state(tensors, spec, target, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for k in a:
        if not k.endswith("conv.weight"):
            assert torch.equal(a[k], clean[k]), k  # BN untouched
    w = a["stages.2.1.dw.conv.weight"]
    seed_w = tensors["stages.2.1.dw.conv.weight"]
    n = seed_w.shape[0]
    assert torch.equal(w[:n, :, 1:4, 1:4], seed_w)  # copied: exact
    assert w[:n, :, 0].abs().max() == 0  # kernel borders of copied channels: still 0
    proj, seed_proj = a["stages.2.0.project.conv.weight"], tensors["stages.2.0.project.conv.weight"]
    assert torch.equal(proj[:16], seed_proj)
    rms = float(seed_proj.square().mean().sqrt())
    new = proj[16:]  # the 8 added output channels: noise of 1% of the tensor's rms
    assert new.abs().min() > 0 and 0.7 * 0.01 * rms < float(new.std()) < 1.3 * 0.01 * rms
    with pytest.raises(UserError, match="noise applies"):
        remap_state(tensors, spec, target, widen="zeros", noise=0.01)


def test_split_widening_preserves_the_function(tv035: tuple[dict, ArchSpec]) -> None:
    """Net2Net-style: a wider stem, stage outputs, hidden widths and head compute the seed's
    maps (the copies equal their originals) in eval and in train mode."""
    tensors, spec = tv035
    target = _with_ops(replace(spec, stem_out=spec.stem_out + 8, head_out=spec.head_out + 40),
                       lambda o: Op(o.kernel, 8 if o.expand == 6 else o.expand))
    for s in (1, 3, 5):
        target = _with_stage(target, s, out=spec.stages[s].out + 10)
    state, _ = remap_state(tensors, spec, target, widen="split")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for train in (False, True):
        # a channel copied 3 times has its columns divided by 3 (inexact in float32: ~1e-8);
        # batch statistics of 2 images on 2x2 maps amplify that, so train mode runs in
        # float64 with a looser bound
        dtype, tol = (torch.float64, 1e-4) if train else (torch.float32, TOL)
        seed_net = _backbone(spec, tensors).train(train).to(dtype)
        net = _backbone(target, state).train(train).to(dtype)
        ref, got = _features(seed_net, x.to(dtype)), _features(net, x.to(dtype))
        for name, r in ref.items():
            c = r.shape[1]
            assert _maxdiff(got[name][:, :c], r) <= tol, (name, train)
            extra = got[name].shape[1] - c
            if extra and name != "ssd_tap":  # copies of channels 0, 1, ...
                copy_of = torch.arange(extra) % c
                assert _maxdiff(got[name][:, c:], r[:, copy_of]) <= tol, name


def test_a_seed_without_head_gets_a_fresh_seeded_head(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    headless = replace(spec, head_out=None)
    t = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    a, _ = remap_state(t, headless, spec, seed=4)
    b, _ = remap_state(t, headless, spec, seed=4)
    Backbone(spec).load_state_dict(a, strict=True)
    assert torch.equal(a["head.conv.weight"], b["head.conv.weight"])
    assert a["head.conv.weight"].std() > 0
    dropped, _ = remap_state(tensors, spec, headless)
    assert not any(k.startswith("head.") for k in dropped)


def test_bad_remap_requests(tv035: tuple[dict, ArchSpec]) -> None:
    tensors, spec = tv035
    with pytest.raises(UserError, match="7 stages but the target spec has 6"):
        remap_state(tensors, spec, replace(spec, stages=spec.stages[:6]))
    with pytest.raises(UserError, match="width strategy must be one of"):
        remap_state(tensors, spec, spec, width="random")
    with pytest.raises(UserError, match="kernel strategy must be one of"):
        remap_state(tensors, spec, spec, kernel="bilinear")


# -- any valid target loads strictly ----------------------------------------------------------
@st.composite
def small_specs(draw: st.DrawFn, n_stages: int) -> ArchSpec:
    stages = []
    for _ in range(n_stages):
        depth = draw(st.integers(1, 3))
        ops = tuple(Op(draw(st.sampled_from((3, 5, 7))), draw(st.sampled_from((1, 2, 3, 6))))
                    for _ in range(depth))
        stages.append(Stage(draw(st.integers(1, 12)), draw(st.sampled_from((1, 2))), ops))
    head = draw(st.one_of(st.none(), st.integers(1, 24)))
    return ArchSpec(draw(st.integers(1, 12)), 2, tuple(stages), head)


@st.composite
def seed_and_target(draw: st.DrawFn) -> tuple[ArchSpec, ArchSpec, str, str]:
    n = draw(st.integers(1, 4))
    return (draw(small_specs(n)), draw(small_specs(n)),
            draw(st.sampled_from(("first", "bn", "std", "l1"))),
            draw(st.sampled_from(("center", "dilate"))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed_and_target(), st.floats(0, 0.1))
def test_property_remap_always_loads_strictly(case: tuple, noise: float) -> None:
    seed_spec, target, width, kernel = case
    torch.manual_seed(0)
    seed_net = randomize_bn_(Backbone(seed_spec))
    state, report = remap_state(seed_net.state_dict(), seed_spec, target, width=width,
                                kernel=kernel, noise=noise)
    net = Backbone(target)
    net.load_state_dict(state, strict=True)  # raises on any missing, extra or misshaped key
    assert [len(r["sources"]) for r in report] == [s.depth for s in target.stages]
    assert all(torch.isfinite(v).all() for v in state.values())


# -- the command ------------------------------------------------------------------------------
MY_ARCH = {"schema": "fnacli/arch@1", "stem": {"out": 32, "stride": 2},
           "stages": [{"out": 16, "stride": 1, "ops": ["k3_e1"]},
                      {"out": 24, "stride": 2, "ops": ["k5_e6"]},
                      {"out": 32, "stride": 2, "ops": ["k5_e3", "k5_e6", "k3_e6", "k5_e6"]},
                      {"out": 64, "stride": 2, "ops": ["k5_e6", "k7_e6", "k3_e6"]},
                      {"out": 96, "stride": 1, "ops": ["k7_e6", "k7_e6", "k7_e6", "k7_e6"]},
                      {"out": 160, "stride": 2, "ops": ["k5_e6", "k7_e6", "k7_e6"]},
                      {"out": 320, "stride": 1, "ops": ["k7_e6"]}],
           "head": {"out": 1280}}


def test_cli_remaps_a_torchvision_pth_to_a_spec_file(run_cli: object, tv_seed_path: Path,
                                                     tmp_path: Path) -> None:
    spec_file = tmp_path / "my_arch.json"
    spec_file.write_text(json.dumps(MY_ARCH))
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_cli(["remap", tv_seed_path, "--spec", spec_file, "-o", out,
                                    "--json"])
    assert code == 0, stderr
    spec = ArchSpec.from_dict(MY_ARCH)
    ck = read_checkpoint(out)
    assert ck.kind == "backbone" and ck.spec == spec
    Backbone(spec).load_state_dict(ck.tensors, strict=True)
    summary = json.loads(stdout)
    assert summary["output"] == str(out) and summary["spec"] == MY_ARCH
    assert ArchSpec.from_dict(summary["seed_spec"]) == mobilenetv2(0.75)
    assert summary["strategies"] == {"width": "first", "kernel": "center", "widen": "noise",
                                     "noise": 0.01, "seed": 0}
    assert summary["params"] == sum(p.numel() for p in Backbone(spec).parameters())
    assert "k3_e6×3" in stderr and "k5_e3 k5_e6 k3_e6" in stderr  # the per-stage table
    assert ck.meta["remap"]["seed_spec"] == mobilenetv2(0.75).to_dict()


def test_cli_reads_the_spec_from_stdin(run_cli: object, tv_seed_path: Path,
                                       tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_cli(["remap", tv_seed_path, "--spec", "-", "-o", out,
                                    "--width", "l1", "--kernel", "dilate", "--noise", "0.001"],
                                   stdin=json.dumps(MY_ARCH))
    assert code == 0, stderr
    assert stdout == ""  # without --json the result is the file; the table goes to stderr
    spec = ArchSpec.from_dict(MY_ARCH)
    Backbone(spec).load_state_dict(read_checkpoint(out).tensors, strict=True)
    assert read_checkpoint(out).meta["remap"]["width"] == "l1"


def test_cli_builtin_spec_name_and_force(run_cli: object, tv_seed_path: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli(["remap", tv_seed_path, "--spec", "mobilenetv2-0.75", "-o", out])[0] == 0
    before = out.read_bytes()
    code, stdout, stderr = run_cli(["remap", tv_seed_path, "--spec", "fna-ssdlite", "-o", out])
    assert code == 2 and "already exists (use --force" in stderr
    assert out.read_bytes() == before
    assert run_cli(["remap", tv_seed_path, "--spec", "fna-ssdlite", "-o", out, "--force"])[0] == 0
    assert read_checkpoint(out).spec.stages[4].ops == (Op(7, 6),) * 4
    # the seed's own spec: an exact copy of the seed
    tensors, _ = from_state_dict(torch.load(tv_seed_path, weights_only=True), "seed")
    run_cli(["remap", tv_seed_path, "--spec", "mobilenetv2-0.75", "-o", out, "--force"])
    got = read_checkpoint(out).tensors
    assert all(torch.equal(got[k], v) for k, v in tensors.items())


@pytest.mark.parametrize(("args", "message"), [
    (["SEED", "--spec", "nope-arch"], "unknown built-in architecture"),
    (["SEED", "--spec", "SPECFILE:{\"schema\": \"fnacli/arch@1\"}"], "missing or invalid 'stem'"),
    (["SEED", "--spec", "SPECFILE:[1, 2"], "not valid JSON"),
    (["SEED", "--spec", "fna"], "unknown built-in architecture"),
    (["BADSEED", "--spec", "mobilenetv2"], "not a checkpoint"),
    (["missing.pth", "--spec", "mobilenetv2"], "no such file"),
    (["SEED", "--spec", "SPECFILE:" + json.dumps({**MY_ARCH, "stages": MY_ARCH["stages"][:5]}),
      ], "7 stages but spec "),
    (["SEED", "--spec", "mobilenetv2", "--width", "random"], "Invalid value for '--width'"),
    (["SEED", "--spec", "mobilenetv2", "--noise", "-1"], "Invalid value for '--noise'"),
])
def test_cli_bad_input_exits_2_with_one_line_and_no_output(run_cli: object, tv_seed_path: Path,
                                                           tmp_path: Path, args: list[str],
                                                           message: str) -> None:
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    resolved = []
    for a in args:
        if a == "SEED":
            a = str(tv_seed_path)
        elif a == "BADSEED":
            a = str(tmp_path / "bad.pth")
        elif a.startswith("SPECFILE:"):
            (tmp_path / "spec.json").write_text(a[len("SPECFILE:"):])
            a = str(tmp_path / "spec.json")
        elif a == "missing.pth":
            a = str(tmp_path / a)
        resolved.append(a)
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_cli(["remap", *resolved, "-o", out])
    assert code == 2
    assert message in stderr
    if "Invalid value" not in message:  # our errors: exactly one line, no traceback
        assert stderr.startswith("fnacli: error: ") and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists() and not list(tmp_path.glob(".out.safetensors*"))


def test_cli_refuses_stdout_as_checkpoint(run_cli: object, tv_seed_path: Path) -> None:
    code, _, stderr = run_cli(["remap", tv_seed_path, "--spec", "mobilenetv2", "-o", "-"])
    assert code == 2 and "cannot go to stdout" in stderr


def test_cli_widen_rules(run_cli: object, tv_seed_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.safetensors"
    code, stdout, stderr = run_cli(["remap", tv_seed_path, "--spec", "mobilenetv2", "-o", out,
                                    "--widen", "split", "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["strategies"]["widen"] == "split"
    assert read_checkpoint(out).meta["remap"]["noise"] == 0.0
    code, _, stderr = run_cli(["remap", tv_seed_path, "--spec", "mobilenetv2", "-o",
                               tmp_path / "x.safetensors", "--widen", "zeros", "--noise", "0.1"])
    assert code == 2 and "--noise applies to --widen noise" in stderr
