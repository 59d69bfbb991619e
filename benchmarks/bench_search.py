"""Cost of the differentiable search's steps, side by side (CPU or GPU).

1. weight step: a supernet weight step on a sampled path (sliced candidates) vs a plain
   training step of the same architecture built on its own (target ≤ 1.3×);
2. α/β step: the relaxed supernet backbone (every candidate, β-mixed masks, weights frozen,
   MAdds cost) vs the sum of one step per candidate op (that op in every layer, the same
   frozen-weight forward + backward) (target ≤ 1.2×);
3. channel search: per searchable stage of ``fna-channels``, ONE shared max-width block times
   the β-mixed masks vs one block per channel candidate (each at its own width, outputs mixed
   by β); forward + backward to β. Jung et al. report 5.6× cheaper search with the shared block.

The sides of each row run interleaved round by round (``bench_perf.interleaved``), medians
of ``--iters`` rounds, ``--threads`` fixed. Random weights and random boxes: no downloads, no
dataset. Usage::

    python benchmarks/bench_search.py [--space fna] [--size 160] [--batch 2] [--device cpu]
                                      [--paths 3] [--iters 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable

import torch
from bench_perf import interleaved  # same folder: run as a script
from rich.console import Console
from rich.table import Table

from fnacli.checkpoint import from_state_dict
from fnacli.cost.lut import load_or_build_lut
from fnacli.nn.supernet import (
    Path,
    Supernet,
    _run_sliced,
    op_choices,
    path_to_arch,
    supernet_state_from_seed,
    width_choices,
)
from fnacli.search import arch as A
from fnacli.search.architect import _Frozen, cost_term
from fnacli.spec import SKIP, builtin_space
from fnacli.tasks import build_detector, get_task

NUM_CLASSES = 80


def compare(sides: dict[str, Callable[[], object]], iters: int, device: torch.device
            ) -> dict[str, float]:
    """Median seconds of each side, the sides interleaved round by round (see
    ``bench_perf.interleaved``): on a shared machine, timing one side after the other lets
    the load of the moment decide the ratio."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = interleaved(sides, iters, sync)
    return {k: statistics.median(v) for k, v in times.items()}


def fake_batch(batch: int, size: int, device: torch.device, seed: int = 0
               ) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.3 + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, NUM_CLASSES + 1, (3,), generator=g)
                        .to(device)})
    return images, targets


def weight_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple) -> None:
    model.train()
    loss = sum(model(*batch).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def build_supernet(space_name: str, device: torch.device) -> Supernet:
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    seed_state, seed_spec = from_state_dict(mobilenet_v2().state_dict(), "torchvision random")
    space = builtin_space(space_name)
    net = Supernet(space)
    net.load_state_dict(supernet_state_from_seed(space, seed_state, seed_spec))
    return net.to(device)


def bench_weight_step(space_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    net = build_supernet(space_name, device)
    space = net.space
    det = build_detector(space.max_arch(), "ssdlite", NUM_CLASSES, (args.size, args.size),
                         backbone=net).to(device)
    opt = torch.optim.SGD(det.parameters(), lr=1e-4, momentum=0.9)
    batch = fake_batch(args.batch, args.size, device)
    g = torch.Generator().manual_seed(1)
    ours, plain = [], []
    for _ in range(args.paths):
        path = A.sample_path(space, None, None, g)
        torch.manual_seed(0)
        ref = build_detector(path_to_arch(space, path), "ssdlite", NUM_CLASSES,
                             (args.size, args.size)).to(device)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=1e-4, momentum=0.9)

        def step(path: Path = path) -> None:
            net.set_path(path)
            weight_step(det, opt, batch)

        m = compare({"ours": step, "plain": lambda m=ref, o=ref_opt: weight_step(m, o, batch)},
                    args.iters, device)
        ours.append(m["ours"])
        plain.append(m["plain"])
    return {"ours": sum(ours) / len(ours), "reference": sum(plain) / len(plain),
            "per_path": [o / p for o, p in zip(ours, plain, strict=True)]}


def bench_arch_step(space_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Backbone level (the detector's neck and head are the same in every step and would be
    counted once per candidate in the sum): features -> mean -> backward, weights frozen."""
    net = build_supernet(space_name, device).train()
    space = net.space
    size = (args.size, args.size)
    lut = load_or_build_lut(space, get_task("ssdlite"), size, NUM_CLASSES)
    alpha, beta = A.init_logits(space, 0)
    logits = [t.to(device).requires_grad_(True) for t in [*alpha.values(), *beta.values()]]
    alpha = dict(zip(alpha, logits[:len(alpha)], strict=True))
    beta = dict(zip(beta, logits[len(alpha):], strict=True))
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)

    def relaxed() -> None:
        with _Frozen(net):
            a, b = A.probs(space, alpha, beta)
            net.set_weighted(a, b)
            loss = sum(f.mean() for f in net(x).values())
            loss = loss + cost_term(lut.expected_madds(a, b, "blocks"), "log", 0.2, 10.0, None)
            loss.backward()
        for t in logits:
            t.grad = None

    def candidate(path: Path) -> Callable[[], None]:
        def step() -> None:
            xg = x.clone().requires_grad_(True)  # something to differentiate, as α is there
            with _Frozen(net):
                net.set_path(path)
                sum(f.mean() for f in net(xg).values()).backward()
        return step

    sides: dict[str, Callable[[], None]] = {"relaxed": relaxed}
    for op in dict.fromkeys(c for *_, cands in op_choices(space) for c in cands if c != SKIP):
        path = Path({(s, i): (c.index(op) if op in c else 0) for s, i, c in op_choices(space)},
                    {s: len(o) - 1 for s, o in width_choices(space)})
        sides[op] = candidate(path)
    m = compare(sides, args.iters, device)
    per_op = {k: v for k, v in m.items() if k != "relaxed"}
    return {"ours": m["relaxed"], "reference": sum(per_op.values()), "per_op": per_op}


def bench_channels(args: argparse.Namespace, device: torch.device) -> dict:
    """Stage by stage, with the stage's first candidate op in every layer."""
    net = build_supernet("fna-channels", device).train()
    space = net.space
    res = args.size // space.stem_stride
    shared_t, separate_t, per_stage = 0.0, 0.0, {}
    for s, outs in width_choices(space):
        st = space.stages[s]
        cin = max(space.stages[s - 1].outs) if s else space.stem_out
        x = torch.randn(args.batch, cin, res, res, device=device)
        beta = torch.zeros(len(outs), device=device, requires_grad=True)
        layers = net.stages[s]
        prev = (space.stages[s - 1].outs, None) if s else ((space.stem_out,), None)
        op = next(c for c in st.candidates if c != SKIP)

        def shared(x: torch.Tensor = x, beta: torch.Tensor = beta, layers=layers, prev=prev,
                   outs=outs, op=op) -> None:
            p = torch.softmax(beta, 0)
            h = x
            for i, layer in enumerate(layers):
                cur = (outs, p)
                h, _ = net._mixed(layer, h, prev if i == 0 else cur, cur, i == 0,
                                  layer.candidates.index(op), False)
            h.mean().backward()
            beta.grad = None

        def separate(x: torch.Tensor = x, beta: torch.Tensor = beta, layers=layers, outs=outs,
                     cin: int = cin, op=op) -> None:
            p = torch.softmax(beta, 0)
            y = 0
            for k, c in enumerate(outs):  # one block per channel candidate, own width
                h, w = x, cin
                for layer in layers:
                    h, _ = _run_sliced(layer.ops[op], h, w, c)
                    w = c
                y = y + p[k] * torch.nn.functional.pad(h, (0, 0, 0, 0, 0, max(outs) - c))
            y.mean().backward()
            beta.grad = None

        m = compare({"shared": shared, "separate": separate}, args.iters, device)
        a, b = m["shared"], m["separate"]
        shared_t, separate_t = shared_t + a, separate_t + b
        per_stage[s] = {"widths": len(outs), "shared": a, "separate": b}
        res = (res - 1) // st.stride + 1
    return {"ours": shared_t, "reference": separate_t, "per_stage": per_stage}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="fna", help="space of rows 1-2 (fna or fna-channels)")
    ap.add_argument("--size", type=int, default=160, help="input side in pixels")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--paths", type=int, default=3, help="sampled paths in row 1")
    ap.add_argument("--iters", type=int, default=5,
                    help="timed rounds, the sides interleaved (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (fixed)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    err = Console(stderr=True, width=118)
    with err.status("weight step vs plain step"):
        w = bench_weight_step(args.space, args, device)
    with err.status("α/β step vs the sum of its candidates"):
        a = bench_arch_step(args.space, args, device)
    with err.status("shared channel block vs one block per width"):
        c = bench_channels(args, device)
    rows = [
        (f"weight step ({args.space}, sampled path)", w, "plain step, same arch", "≤ 1.3×",
         w["ours"] / w["reference"]),
        (f"α/β step ({args.space} backbone, all candidates)", a, "Σ one step per candidate",
         "≤ 1.2×", a["ours"] / a["reference"]),
        ("channel search (fna-channels, shared block)", c, "one block per width",
         "5.6× cheaper (Jung et al.)", c["reference"] / c["ours"]),
    ]
    table = Table(title=f"search step costs on {device.type} ({torch.get_num_threads()} "
                        f"threads), ssdlite {args.size}x{args.size}, batch {args.batch}",
                  title_justify="left")
    for col in ("measurement", "ours", "reference", "compared with", "ratio", "target"):
        table.add_column(col, justify="right" if col in ("ours", "reference", "ratio") else
                         "left")
    for name, d, ref, target, ratio in rows:
        suffix = "× cheaper" if "cheaper" in target else "×"
        table.add_row(name, f"{d['ours'] * 1e3:.1f} ms", f"{d['reference'] * 1e3:.1f} ms", ref,
                      f"{ratio:.2f}{suffix}", target)
    err.print(table)
    if args.json:
        json.dump({"device": device.type, "size": args.size, "batch": args.batch,
                   "weight_step": w, "arch_step": a, "channels": c,
                   "ratios": {"weight_step": rows[0][4], "arch_step": rows[1][4],
                              "channel_speedup": rows[2][4]}}, sys.stdout, default=str)
        print()


if __name__ == "__main__":
    main()
