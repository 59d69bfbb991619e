"""The pull of the log-form latency cost on α/β (docs/latency.md): the norm of ∇ log C at
uniform α/β for C the searched blocks' latency (``--cost-scope blocks``, the default), the
whole network's without and with the measured overhead (what ``--cost latency`` priced
before), and the searched blocks' MAdds, on the tests' tiny space with a freshly measured
latency table.

    PYTHONPATH=. python benchmarks/latency_cost_gradient.py [--size 96]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("FNACLI_CACHE_DIR", tempfile.mkdtemp())

from test_lut import TINY, searchable  # noqa: E402

from fnacli.cost.latency import build_latency_table  # noqa: E402
from fnacli.cost.lut import build_lut  # noqa: E402
from fnacli.cost.measure import MeasureConfig  # noqa: E402
from fnacli.spec import SpaceSpec  # noqa: E402
from fnacli.tasks import get_task  # noqa: E402

FAST = MeasureConfig(threads=1, min_rounds=6, max_rounds=8, sample_s=0.001, blocks=2)


def pull(table: object, space: SpaceSpec, scope: str, less: float = 0.0) -> tuple[float, float]:
    """(C, |∇ log C|) at uniform α/β; ``less`` is subtracted from C."""
    layers, stages = searchable(space)
    logits = [torch.zeros(len(space.stages[s].layer_candidates(i)), dtype=torch.float64,
                          requires_grad=True) for s, i in layers]
    logits += [torch.zeros(len(space.stages[s].outs), dtype=torch.float64, requires_grad=True)
               for s in stages]
    a = {k: v.softmax(0) for k, v in zip(layers, logits, strict=False)}
    b = {s: v.softmax(0) for s, v in zip(stages, logits[len(layers):], strict=True)}
    c = table.expected_cost(a, b, scope) - less
    grads = torch.autograd.grad(torch.log(c) / math.log(10), logits)
    return float(c.detach()), float(torch.cat([g.flatten() for g in grads]).norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args()
    space, size = SpaceSpec.from_dict(TINY), (args.size, args.size)
    for name in ("ssdlite", "deeplabv3"):
        task = get_task(name)
        t0 = time.time()
        table = build_latency_table(space, task, size, 3, FAST)
        took = time.time() - t0
        rows = {"latency, blocks (now)": pull(table, space, "blocks"),
                "latency, network": pull(table, space, "detector", table.overhead_ns),
                "latency, network + overhead (before)": pull(table, space, "detector"),
                "MAdds, blocks": pull(build_lut(space, task, size, 3), space, "blocks")}
        now = rows["latency, blocks (now)"][1]
        print(f"{name} {size[0]}x{size[1]}: table {took:.0f}s, overhead "
              f"{table.overhead_ns / 1e6:.2f} ms, load {os.getloadavg()[0]:.1f}")
        for what, (c, g) in rows.items():
            print(f"  {what:38s} C {c / 1e6:9.3f} (ms or M)  |grad log C| {g:.4f}  "
                  f"now/this {now / g:.2f}x")


if __name__ == "__main__":
    main()
