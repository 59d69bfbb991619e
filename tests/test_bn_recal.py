"""BN recalibration of a supernet path (DetNAS): reset, then the plain average over a fixed
set of batches; for a path it equals recalibrating the standalone network of that path."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_bn_

from fnacli.nn.backbone import Backbone
from fnacli.nn.supernet import Supernet, path_to_arch, subnet_state
from fnacli.search import arch as A
from fnacli.search.bn_recal import recalibrate_path, stats_forward
from fnacli.spec import SpaceSpec, mobilenetv2
from fnacli.train import recalibrate_bn

SPACE = {"schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": [8, 12], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e6", "skip"]},
                    {"out": [16, 24], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e3", "skip"]},
                    {"out": 32, "stride": 2, "ops": ["k3_e6"]},
                    {"out": 40, "stride": 2, "ops": ["k3_e6"]}],
         "head": {"out": 48}}


@pytest.fixture(autouse=True)
def one_thread():
    # tiny convolutions: on a busy 2-core machine one thread is many times faster
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def batches(n: int = 3, seed: int = 0, size: int = 32) -> list:
    g = torch.Generator().manual_seed(seed)
    # (images, targets) like the detection loader; shifted so the statistics are not N(0, 1)
    return [([torch.rand(3, size, size, generator=g) * 2 + 0.5 for _ in range(2)], None)
            for _ in range(n)]


def bn_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


def test_statistics_are_the_plain_average_over_batches() -> None:
    torch.manual_seed(0)
    net = randomize_bn_(Backbone(mobilenetv2(0.35))).eval()
    data = batches()
    used = recalibrate_bn(net, data, stats_forward("cpu"))
    assert used == len(data) and not net.training
    # independent reference for the first BN: per-batch mean / unbiased variance of the stem
    # convolution's output, averaged over the batches with equal weight
    with torch.no_grad():
        outs = [net.stem.conv(torch.stack(images)) for images, _ in data]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    varis = torch.stack([o.transpose(0, 1).flatten(1).var(1, unbiased=True) for o in outs]).mean(0)
    assert torch.allclose(net.stem.bn.running_mean, means, atol=1e-5)
    assert torch.allclose(net.stem.bn.running_var, varis, rtol=1e-4)
    assert net.stem.bn.momentum == 0.1  # the layers' own momentum is restored


def test_path_recalibration_equals_the_standalone_network_and_forgets_the_past() -> None:
    space = SpaceSpec.from_dict(SPACE)
    torch.manual_seed(0)
    net = randomize_bn_(Supernet(space)).eval()
    g = torch.Generator().manual_seed(3)
    paths = [A.sample_path(space, None, None, g) for _ in range(2)]
    arch_a, arch_b = (path_to_arch(space, p) for p in paths)
    assert arch_a != arch_b
    data = batches()
    x = torch.rand(2, 3, 32, 32)

    net.set_path(paths[0])
    with torch.no_grad():
        before = net(x)["head"]
    stale = bn_buffers(net)
    recalibrate_path(net, net, paths[0], data, "cpu")
    after = bn_buffers(net)
    changed = [k for k in after if not torch.equal(after[k], stale[k])]
    assert len(changed) > len(after) // 3  # the path's layers got new statistics
    with torch.no_grad():
        out_a = net(x)["head"]
    assert (out_a - before).abs().max() > 1e-3  # and the path computes something else now

    # the reference: the path's own network, cut out of the supernet and recalibrated alone
    ref = Backbone(arch_a)
    ref.load_state_dict(subnet_state(net, paths[0]))
    recalibrate_bn(ref, data, stats_forward("cpu"))
    got = subnet_state(net, paths[0])
    for k, v in bn_buffers(ref).items():
        assert torch.allclose(got[k], v, atol=1e-5, rtol=1e-4), k
    with torch.no_grad():
        assert torch.allclose(ref(x)["head"], out_a, atol=1e-4)

    # another path in between must not leak into path A's statistics (they are reset)
    recalibrate_path(net, net, paths[1], batches(seed=7), "cpu")
    recalibrate_path(net, net, paths[0], data, "cpu")
    again = subnet_state(net, paths[0])
    for k in bn_buffers(ref):
        assert torch.allclose(again[k], got[k], atol=1e-6), k


def test_detector_recalibration_reaches_neck_and_head_bn() -> None:
    from fnacli.tasks import build_detector

    space = SpaceSpec.from_dict(SPACE)
    torch.manual_seed(0)
    sup = Supernet(space)
    det = build_detector(space.max_arch(), "ssdlite", 2, (64, 64), backbone=sup).eval()
    stale = bn_buffers(det)
    path = A.sample_path(space, None, None, torch.Generator().manual_seed(0))
    recalibrate_path(det, sup, path, batches(size=48), "cpu")
    fresh = bn_buffers(det)
    for part in ("backbone.body.stem.", "backbone.extra.", "head."):
        keys = [k for k in fresh if k.startswith(part)]
        assert keys and any(not torch.equal(fresh[k], stale[k]) for k in keys), part
    assert not det.training
