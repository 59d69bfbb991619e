"""Channels added by widening are trainable (Jung et al.: small noise on the mapped parameters
"to allow backpropagation of those assigned 0"): after `remap`/`expand` with the defaults and
one backward pass of a detector loss, every added channel's conv weights have a non-zero
gradient. With `zeros` many of them get exactly 0 (the old behaviour)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import torchvision_seed

from fnacli.checkpoint import from_state_dict
from fnacli.model_checkpoint import load_backbone_into
from fnacli.nn.supernet import Supernet, max_path
from fnacli.remap import supernet_state_from_seed
from fnacli.spec import ArchSpec, SpaceSpec
from fnacli.tasks import build_detector

SIZE = {"ssdlite": (64, 64), "retinanet": (96, 64)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss_backward(det: torch.nn.Module, task: str) -> None:
    torch.manual_seed(0)
    det.train()
    w, h = SIZE[task]
    images = [torch.rand(3, h, w) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]]),
                "labels": torch.tensor([1, 2])}] * 2
    sum(det(images, targets).values()).backward()


def _dead_rows(named: dict[str, torch.nn.Parameter], seed_rows: dict[str, int],
               rename: object = lambda k: k) -> tuple[int, list[str]]:
    """(added rows checked, names of conv weights with an added row whose gradient is 0)."""
    checked, dead = 0, []
    for name, p in named.items():
        key = rename(name)
        if not name.endswith("conv.weight") or key not in seed_rows:
            continue
        n = seed_rows[key]
        if p.shape[0] <= n:
            continue
        g = p.grad[n:] if p.grad is not None else torch.zeros_like(p[n:])
        checked += g.shape[0]
        if (g.flatten(1).abs().sum(1) == 0).any():
            dead.append(name)
    return checked, dead


@pytest.fixture(scope="module")
def seed() -> tuple[dict, ArchSpec]:
    return from_state_dict(torchvision_seed(0.35, seed=3).state_dict(), "tv0.35")


def _wider(spec: ArchSpec) -> ArchSpec:
    stages = tuple(replace(st, out=st.out + (4 if s else 0)) for s, st in enumerate(spec.stages))
    return replace(spec, stages=stages)


@pytest.mark.parametrize("task", ["ssdlite", "retinanet"])
@pytest.mark.parametrize("widen", ["noise", "zeros"])
def test_remapped_added_channels_get_gradients(seed: tuple[dict, ArchSpec], task: str,
                                               widen: str) -> None:
    from fnacli.remap import remap_state

    tensors, spec = seed
    target = _wider(spec)
    kwargs = {} if widen == "noise" else {"widen": widen}  # the default is the papers' rule
    state, _ = remap_state(tensors, spec, target, **kwargs)
    torch.manual_seed(1)
    det = build_detector(target, task, num_classes=3, size=SIZE[task])
    load_backbone_into(det, state, "remapped")
    _loss_backward(det, task)
    seed_rows = {k: v.shape[0] for k, v in tensors.items() if k.endswith("conv.weight")}
    checked, dead = _dead_rows(dict(det.backbone.body.named_parameters()), seed_rows)
    assert checked > 100
    if widen == "noise":
        assert dead == []
    else:  # zero rows feeding zero columns: no gradient (what the default fixes)
        assert len(dead) > 5


def _space_over(spec: ArchSpec) -> SpaceSpec:
    """A space whose widths are the seed's and 4 more per stage, one op per layer."""
    stages = [{"out": spec.stages[0].out, "stride": 1, "ops": ["k3_e1"]}]
    for st in spec.stages[1:]:
        stages.append({"out": [st.out, st.out + 4], "stride": st.stride, "layers": st.depth,
                       "ops": ["k3_e6"]})
    return SpaceSpec.from_dict({"schema": "fnacli/space@1",
                                "stem": {"out": spec.stem_out, "stride": 2},
                                "stages": stages, "head": {"out": spec.head_out}})


@pytest.mark.parametrize("task", ["ssdlite", "retinanet"])
def test_expanded_supernet_added_channels_get_gradients(task: str) -> None:
    tensors, spec = from_state_dict(torchvision_seed(0.35, seed=4).state_dict(), "tv0.35")
    space = _space_over(spec)
    net = Supernet(space, with_head=task == "ssdlite")
    state = supernet_state_from_seed(space, tensors, spec)  # defaults: widen="noise"
    net.load_state_dict({k: state[k] for k in net.state_dict()})
    net.set_path(max_path(space))
    torch.manual_seed(1)
    det = build_detector(space.max_arch(), task, num_classes=3, size=SIZE[task], backbone=net)
    _loss_backward(det, task)
    seed_rows = {k: v.shape[0] for k, v in tensors.items() if k.endswith("conv.weight")}

    def rename(k: str) -> str:  # stages.S.L.ops.k3_e6.X -> stages.S.L.X
        parts = k.split(".")
        return ".".join(parts[:3] + parts[5:]) if k.startswith("stages.") else k

    checked, dead = _dead_rows(dict(net.named_parameters()), seed_rows, rename)
    assert checked > 100 and dead == []
