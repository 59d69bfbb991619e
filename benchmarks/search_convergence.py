"""Convergence of differentiable searches from their metrics files: per epoch, the argmax
path's probability (and a uniform path's), the median per-layer normalised entropy, the
median top-2 gap and how many layers' argmax changed (``fnacli.search.convergence``). Works on
metrics files written before fnacli recorded these numbers itself (it reads the α/β
probabilities of every ``epoch`` line). Usage::

    python benchmarks/search_convergence.py SEARCHED.metrics.jsonl [...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from fnacli.search import convergence as C


def epochs(path: Path) -> list[dict]:
    """Every epoch line's convergence record (the α/β probabilities re-read)."""
    out, prev = [], None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") != "epoch":
            continue
        alpha = {tuple(int(x) for x in k.split(".")): torch.tensor(list(v.values()))
                 for k, v in rec["alpha"].items()}
        beta = {int(k): torch.tensor(list(v.values())) for k, v in rec["beta"].items()}
        conv = C.epoch_record(alpha, beta, prev)
        prev = conv.get("argmax")
        out.append({"epoch": rec["epoch"], "argmax_madds": rec.get("argmax_madds"),
                    "expected_madds": rec.get("expected_madds"),
                    **{k: v for k, v in conv.items() if k not in ("entropy", "argmax",
                                                                 "argmax_changed_layers")}})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = {str(m): epochs(m) for m in args.metrics}
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for name, recs in res.items():
        print(name)
        print("epoch  log10 p(argmax)  log10 p(uniform)  entropy median  top-2 gap  changed  "
              "E[MAdds]  argmax MAdds")
        for r in recs:
            changed = "-" if r["argmax_changed"] is None else r["argmax_changed"]
            print(f"{r['epoch']:5d}  {r['argmax_log10_probability']:15.1f}  "
                  f"{r['uniform_log10_probability']:16.1f}  {r['entropy_median']:14.3f}  "
                  f"{r['top2_gap_median']:9.3f}  {changed:>7}  "
                  f"{r['expected_madds'] / 1e6:7.2f}M  {r['argmax_madds'] / 1e6:11.2f}M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
