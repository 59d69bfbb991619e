"""DetNAS's parent rule (Alg. 2: the top-k of the current population) against the elitist pool
(the top-k of every candidate so far), side by side on the same searches.

Two arms:

- ``simulated`` (default, seconds): evolution on a built-in space (default ``fna-channels``)
  with DetNAS's population 50 and 20 generations and fnacli's parents 10 and mutation 0.1,
  under a MAdds-free fitness landscape with gene interactions (an NK landscape: each gene's
  contribution depends on it and ``--k`` other genes) plus per-architecture noise that stands
  in for the supernet's ranking error. It prints, per pool, the mean over ``--seeds`` of the
  true (noise-free) fitness of the candidate each search returns, and of the best true fitness
  it evaluated.
- ``--trained SUPERNET --data DIR``: both pools on one trained one-shot supernet (from
  ``fnacli search --train-only``), each scored by the supernet (BN recalibration + COCOeval
  on the held-out fitness images), same seed and settings; prints the best fitness each found.

Usage::

    python benchmarks/bench_evolution_parents.py [--seeds 20] [--space fna-channels]
    python benchmarks/bench_evolution_parents.py --trained evo.oneshot.safetensors \\
        --data DIR --population 8 --generations 4 --parents 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fnacli.search import evolution as E  # noqa: E402
from fnacli.spec import load_space  # noqa: E402

POOLS = ("population", "elitist")


def nk_landscape(sizes: tuple[int, ...], k: int, seed: int):  # noqa: ANN201
    """fitness(genome): mean over genes of a random table indexed by the gene and k others."""
    rng = random.Random(seed)
    n = len(sizes)
    links = [[i, *rng.sample([j for j in range(n) if j != i], k)] for i in range(n)]
    tables: list[dict] = [{} for _ in range(n)]

    def fitness(g: tuple[int, ...]) -> float:
        total = 0.0
        for i, idx in enumerate(links):
            key = tuple(g[j] for j in idx)
            if key not in tables[i]:
                tables[i][key] = random.Random(hash((seed, i, key))).random()
            total += tables[i][key]
        return total / n

    return fitness


def simulated(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    enc = E.Encoding(space)
    results = {p: ([], []) for p in POOLS}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        true = nk_landscape(enc.sizes, args.k, seed)
        for pool in POOLS:
            def evaluate(genomes, seed=seed, true=true):  # noqa: ANN001, ANN202
                return [{"AP": true(g) + random.Random(f"{seed} {enc.key(g)}").gauss(
                    0, args.noise)} for g in genomes]

            cfg = E.SearchConfig(population=args.population, parents=args.parents,
                                 mutation_prob=args.mutation, generations=args.generations,
                                 seed=seed, parent_pool=pool)
            search = E.OneShotSearch(enc, lambda a: 0.0, evaluate, cfg)
            search.run()
            ranked = search.ranked()
            results[pool][0].append(true(ranked[0].genome))
            results[pool][1].append(max(true(c.genome) for c in ranked))
    print(f"simulated: space {args.space} ({len(enc)} genes), NK k={args.k}, noise "
          f"{args.noise}, population {args.population} x {args.generations} generations, "
          f"parents {args.parents}, mutation {args.mutation}, {args.seeds} seeds "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| parent pool | true fitness of the returned candidate | best true fitness "
          "evaluated |")
    print("|---|---|---|")
    for pool, (ret, best) in results.items():
        print(f"| {pool} | {statistics.mean(ret):.4f} ± {statistics.stdev(ret):.4f} | "
              f"{statistics.mean(best):.4f} ± {statistics.stdev(best):.4f} |")
    wins = sum(a > b for a, b in zip(results["population"][0], results["elitist"][0],
                                     strict=True))
    print(f"population pool returned the better candidate in {wins} of {args.seeds} seeds")


def on_supernet(args: argparse.Namespace) -> None:
    from fnacli.pipeline.fitness import fitness_sets
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig
    from fnacli.search.bn_recal import calibration_subset
    from fnacli.search.oneshot import PathEvaluator, build_oneshot_detector, load_trained
    from fnacli.tasks import get_task

    ckpt, info = load_trained(args.trained)
    task = get_task(info.task)
    opts = OneShotSearchConfig(supernet=args.trained, output="unused.safetensors",
                               data=args.data, seed=args.seed)
    fit, calib_pool, _ = fitness_sets(opts, info, task)
    calib = calibration_subset(calib_pool, args.calib_images, args.seed)
    detector, supernet = build_oneshot_detector(ckpt, task.name, info.num_classes, info.size,
                                                str(args.trained))
    enc = E.Encoding(ckpt.space)
    score = PathEvaluator(detector, supernet, enc, calib, fit, 8, 0, "cpu", task=task.name)
    memo: dict[str, dict] = {}

    def evaluate(genomes):  # noqa: ANN001, ANN202 - both pools share the scores of an arch
        out = []
        for g in genomes:
            key = enc.key(g)
            if key not in memo:
                memo[key] = score(g)
            out.append(memo[key])
        return out

    t0 = time.perf_counter()
    print(f"on {args.trained}: population {args.population} x {args.generations} "
          f"generations, parents {args.parents}, mutation {args.mutation}, seed {args.seed}")
    print("| parent pool | best AP found | mean AP of the last generation |")
    print("|---|---|---|")
    for pool in POOLS:
        cfg = E.SearchConfig(population=args.population, parents=args.parents,
                             mutation_prob=args.mutation, generations=args.generations,
                             seed=args.seed, parent_pool=pool, metric=task.metric)
        search = E.OneShotSearch(enc, lambda a: 0.0, evaluate, cfg)
        result = search.run()
        last = statistics.mean(c.fitness for c in result.population)
        print(f"| {pool} | {search.ranked()[0].fitness:.4f} | {last:.4f} |")
    print(f"({len(memo)} architectures scored, {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="fna-channels")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--parents", type=int, default=10)
    p.add_argument("--mutation", type=float, default=0.1)
    p.add_argument("--trained", type=Path)
    p.add_argument("--data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-images", type=int, default=16)
    args = p.parse_args()
    if args.trained:
        on_supernet(args)
    else:
        simulated(args)


if __name__ == "__main__":
    main()
