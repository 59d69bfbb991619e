"""Shared fixtures: small, generic helpers every test module may use."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

# Tests run as 2 xdist workers on a 2-core machine shared with other runs: one intra-op
# thread per worker avoids oversubscription (which made tiny forwards take seconds).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Cost tables and per-unit counts go to a cache of this test run, not the user's."""
    import os

    os.environ.setdefault("FNACLI_CACHE_DIR", str(tmp_path_factory.mktemp("fnacli-cache")))


def randomize_bn_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that
    tests comparing features really exercise BN (fresh BNs are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return module


def assert_stem_bn_recalibrated(detector: nn.Module, images: list[torch.Tensor],
                                 batches: int) -> None:
    """A detector whose BN statistics were recomputed (momentum None) on ``batches`` equal
    batches of ``images``: its first BN layer's running mean is the mean of the first conv's
    output over all of them, computed here from torchvision's own transform (resize,
    normalise) and the conv alone; every BN it ran counts ``batches`` batches."""
    detector.eval()
    with torch.no_grad():
        batched, _ = detector.transform([im.float() for im in images])
    body = detector.backbone
    conv = next(m for m in body.modules() if isinstance(m, nn.Conv2d))
    bn = next(m for m in body.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        want = conv(batched.tensors).double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean.double(), want, atol=1e-5, rtol=1e-4)
    assert int(bn.num_batches_tracked) == batches


def torchvision_seed(width: float = 1.0, seed: int = 0) -> nn.Module:
    """torchvision's mobilenet_v2 with seeded random weights and random BN, in eval mode."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(seed)
    return randomize_bn_(mobilenet_v2(width_mult=width), seed).eval()


@pytest.fixture(scope="session")
def tv_seed_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision mobilenet_v2(width_mult=0.75) state dict saved as .pth (random init)."""
    path = tmp_path_factory.mktemp("seed") / "mbv2_075.pth"
    torch.save(torchvision_seed(0.75).state_dict(), path)
    return path


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``fnacli ARGS`` in-process through the real entry point (exit codes included).

    Returns (exit code, stdout, stderr); ``stdin`` is fed as text.
    """
    from fnacli.cli.app import main

    def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["fnacli", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        monkeypatch.setenv("FNACLI_DEBUG", "0")  # restored after the test, unlike a --debug run
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
