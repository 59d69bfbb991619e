"""One-shot architecture search on a trained supernet: evolution (DetNAS) and random search.

Encoding: an architecture of a space is a genome, a tuple of ints: for every layer of every
searchable stage an index into ``layer_candidates(l)`` (the α order of ``fnacli.search.arch``),
then for every stage with several channel candidates an index into its ascending ``outs``
(the β order). Decoding drops skips, so several genomes can be the same network; candidates
are therefore identified (and cached) by the canonical compact JSON of their ``ArchSpec``.

Evolution (DetNAS's Alg. 2, after SPOS): generation 0 is ``population`` random genomes; every
later generation is ``population // 2`` mutants (each gene resampled with ``mutation_prob``)
and the rest crossovers (each gene from either parent), parents drawn from the ``parents``
best of the previous generation (``parent_pool="population"``, Alg. 2's
``select-topk(P^(j))``) or of every candidate seen so far (``"elitist"``), topped up with
random genomes when the operators run dry. Every
drawn genome must be within ``max_madds`` (and ``max_latency``, by a latency table; rejection
sampling) and new: an architecture is never evaluated twice. ``random`` draws the same
number of candidates uniformly under the same limit, in batches of ``population`` (one
batch = one "generation" for progress and resume).

The search is a pure function of (space, cost, fitness, config, seed): all randomness comes
from one ``random.Random`` whose state is saved with the population and the cache after each
generation, so ``resume`` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fnacli import interrupt
from fnacli.errors import UserError
from fnacli.io import load_json_text, write_text_atomic
from fnacli.nn.supernet import Path as SupernetPath
from fnacli.nn.supernet import op_choices, path_to_arch, width_choices
from fnacli.report import format_madds  # noqa: F401 - also importable from here
from fnacli.spec import SKIP, ArchSpec, SpaceSpec
from fnacli.train import check_identity

Genome = tuple[int, ...]
STRATEGIES = ("evolution", "random")
# where evolution's parents come from: the last generation (DetNAS) or all candidates so far
PARENT_POOLS = ("population", "elitist")
STATE_FORMAT = "fnacli/oneshot-search@1"
_MADDS_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}


def parse_madds(text: str | float | int, flag: str = "--max-madds") -> float:
    """'800M', '1.2G' / '1.2B', '3e8' or a number -> MAdds (errors name ``flag``)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        t = text.strip().upper()
        unit = t[-1] if t and t[-1] in "KMGB" else ""
        try:
            value = float(t[:-1] if unit else t) * _MADDS_UNITS[unit]
        except ValueError:
            raise UserError(f"{flag}: expected a number like 800M, 1.2G or 3e8, got "
                            f"{text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise UserError(f"{flag}: expected a positive number, got {text!r}")
    return value


def window_text(lo: float | None, hi: float | None) -> str:
    """'15M-17M', '17M' (an upper limit only, as DetNAS's) or '>= 15M'."""
    if lo is None:
        return format_madds(hi) if hi is not None else "any"
    return f"{format_madds(lo)}-{format_madds(hi)}" if hi is not None else f">= {format_madds(lo)}"


def within(c: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or c >= lo) and (hi is None or c <= hi)


def check_window(lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise UserError(f"--min-madds {format_madds(lo)} is above --max-madds "
                        f"{format_madds(hi)}")


def check_reachable(encoding: Encoding, cost: Callable[[ArchSpec], float], lo: float | None,
                    hi: float | None) -> None:
    """Refuse a MAdds window no architecture of the space can meet, before any work."""
    if hi is not None:
        cheapest = cost(encoding.arch(encoding.cheapest(cost)))
        if cheapest > hi:
            raise UserError(f"--max-madds {format_madds(hi)} is below the cheapest "
                            f"architecture of the space ({format_madds(cheapest)} MAdds)")
    if lo is not None:
        dearest = cost(encoding.arch(encoding.dearest(cost)))
        if dearest < lo:
            raise UserError(f"--min-madds {format_madds(lo)} is above the most expensive "
                            f"architecture of the space ({format_madds(dearest)} MAdds)")


# -- encoding ------------------------------------------------------------------------------
class Encoding:
    """Genomes of a space (see the module docstring)."""

    def __init__(self, space: SpaceSpec) -> None:
        self.space = space
        self.ops = op_choices(space)
        self.widths = width_choices(space)
        self.sizes: Genome = (tuple(len(c) for *_, c in self.ops)
                              + tuple(len(o) for _, o in self.widths))

    def __len__(self) -> int:
        return len(self.sizes)

    def path(self, g: Sequence[int]) -> SupernetPath:
        self.check(g)
        n = len(self.ops)
        return SupernetPath({(s, i): g[k] for k, (s, i, _) in enumerate(self.ops)},
                            {s: g[n + k] for k, (s, _) in enumerate(self.widths)})

    def encode(self, path: SupernetPath) -> Genome:
        return (tuple(path.ops.get((s, i), 0) for s, i, _ in self.ops)
                + tuple(path.widths.get(s, len(o) - 1) for s, o in self.widths))

    def arch(self, g: Sequence[int]) -> ArchSpec:
        return path_to_arch(self.space, self.path(g))

    def key(self, g: Sequence[int]) -> str:
        return arch_key(self.arch(g))

    def check(self, g: Sequence[int]) -> None:
        if len(g) != len(self.sizes) or any(not 0 <= x < n for x, n in zip(g, self.sizes,
                                                                                strict=False)):
            raise UserError(f"genome {list(g)} does not fit the space (gene counts "
                            f"{list(self.sizes)})")

    # -- operators (all randomness from ``rng``) -------------------------------------------
    def random(self, rng: random.Random) -> Genome:
        return tuple(rng.randrange(n) for n in self.sizes)

    def mutate(self, g: Genome, rng: random.Random, prob: float) -> Genome:
        return tuple(rng.randrange(n) if rng.random() < prob else x
                     for x, n in zip(g, self.sizes, strict=True))

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome:
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))

    def cheapest(self, cost: Callable[[ArchSpec], float]) -> Genome:
        """The genome of least cost: narrowest widths, every skippable layer skipped, and per
        remaining layer its cheapest op (at fixed widths layer costs add up, so choosing each
        layer on its own is optimal; a stage's first layer and its later ones, which differ in
        stride and input width, may prefer different ops)."""
        g = [0] * len(self.sizes)  # width genes 0: outs ascend
        for k, (_, _, cands) in enumerate(self.ops):
            if SKIP in cands:
                g[k] = cands.index(SKIP)
        return self._best_ops(g, cost, 1.0)

    def dearest(self, cost: Callable[[ArchSpec], float]) -> Genome:
        """The genome of most cost: widest widths, no layer skipped, per layer its dearest op
        (the mirror of :meth:`cheapest`)."""
        g = ([next(j for j, op in enumerate(c) if op != SKIP) for _, _, c in self.ops]
             + [len(o) - 1 for _, o in self.widths])  # outs ascend
        return self._best_ops(g, cost, -1.0)

    def _best_ops(self, g: list[int], cost: Callable[[ArchSpec], float], sign: float) -> Genome:
        """``g`` with each non-skipped layer's op the one minimising ``sign * cost``."""
        for k, (_, _, cands) in enumerate(self.ops):
            if cands[g[k]] == SKIP:
                continue
            best: tuple[float, int] | None = None
            for j, op in enumerate(cands):
                if op == SKIP:
                    continue
                c = sign * cost(self.arch([*g[:k], j, *g[k + 1:]]))
                if best is None or c < best[0]:
                    best = (c, j)
            assert best is not None
            g[k] = best[1]
        return tuple(g)


def arch_key(arch: ArchSpec) -> str:
    """Canonical identity of a candidate: its compact spec JSON."""
    return arch.to_json(compact=True)


# -- the search ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig:
    strategy: str = "evolution"
    population: int = 50
    parents: int = 10
    mutation_prob: float = 0.1
    generations: int = 20
    candidates: int | None = None  # random: how many (default population x generations)
    max_madds: float | None = None
    max_latency: float | None = None  # milliseconds, by a latency table
    metric: str = "AP"
    min_madds: float | None = None  # with max_madds: a matched-cost window (DetNAS Table 4)
    seed: int = 0
    max_tries: int = 200  # draws per wanted candidate before giving up (rejection sampling)
    parent_pool: str = "population"
    max_params: float | None = None  # backbone parameters (``OneShotSearch.params``)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy: expected one of {', '.join(STRATEGIES)}, got "
                            f"{self.strategy!r}")
        if self.parent_pool not in PARENT_POOLS:
            raise UserError(f"--parent-pool: expected one of {', '.join(PARENT_POOLS)}, got "
                            f"{self.parent_pool!r}")
        if self.population < 1 or self.generations < 1:
            raise UserError("--population and --generations must be at least 1")
        if not 1 <= self.parents:
            raise UserError(f"--parents: expected at least 1, got {self.parents}")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise UserError(f"--mutation-prob: expected a probability in [0, 1], got "
                            f"{self.mutation_prob}")
        if self.candidates is not None and self.candidates < 1:
            raise UserError(f"--candidates: expected at least 1, got {self.candidates}")
        check_window(self.min_madds, self.max_madds)

    @property
    def total_candidates(self) -> int:
        if self.strategy == "random":
            return self.candidates or self.population * self.generations
        return self.population * self.generations

    @property
    def rounds(self) -> int:
        """Generations (evolution) or batches of ``population`` (random)."""
        if self.strategy == "random":
            return math.ceil(self.total_candidates / self.population)
        return self.generations

    def identity(self) -> dict:
        """What a resumed search must share (the number of generations may grow)."""
        d = asdict(self)
        for k in ("generations", "candidates", "max_tries"):
            d.pop(k)
        for k in ("max_latency", "min_madds", "max_params"):  # as searches without one had it
            if d[k] is None:
                d.pop(k)
        if d["parent_pool"] == "elitist":  # the only pool before there was a choice
            d.pop("parent_pool")
        return d

    def parents_of(self, population: list[Candidate], best: list[Candidate]
                   ) -> list[Candidate]:
        """The next generation's parents: the ``parents`` best of ``population`` (the last
        generation), or ``best`` (the best so far) with the elitist pool."""
        if self.parent_pool == "elitist":
            return best
        return sorted(population, key=Candidate.rank_key)[:self.parents]


@dataclass
class Candidate:
    key: str
    genome: Genome
    madds: float
    fitness: float
    stats: dict[str, float]
    generation: int

    def to_dict(self) -> dict:
        return {"key": self.key, "genome": list(self.genome), "madds": self.madds,
                "fitness": self.fitness, "stats": self.stats, "generation": self.generation}

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(d["key"], tuple(d["genome"]), float(d["madds"]), float(d["fitness"]),
                   dict(d["stats"]), int(d["generation"]))

    def rank_key(self) -> tuple:
        # best first: fitness down, then cheaper, then the key (total order -> determinism)
        f = self.fitness if math.isfinite(self.fitness) else -math.inf
        return (-f, self.madds, self.key)


@dataclass
class SearchResult:
    top: list[Candidate]  # the ``parents`` best so far, best first
    population: list[Candidate]  # the last generation, as drawn
    rounds: int  # finished generations / batches
    evaluated: int
    finished: bool

    @property
    def best(self) -> Candidate:
        return self.top[0]


Evaluate = Callable[[Sequence[Genome]], list[dict[str, float]]]


@dataclass
class OneShotSearch:
    """Evolution or random search; ``evaluate`` maps genomes to COCO-style stats dicts
    (fitness = ``stats[config.metric]``), ``cost`` an architecture to MAdds."""

    encoding: Encoding
    cost: Callable[[ArchSpec], float]
    evaluate: Evaluate
    config: SearchConfig
    state_path: Path | None = None
    history_path: Path | None = None
    chunk: int = 1  # genomes per ``evaluate`` call (the number of processes evaluating)
    write: bool = True  # only one process writes files
    on_candidate: Callable[[Candidate, bool], None] | None = None  # (candidate, reused)
    on_round: Callable[[dict], None] | None = None
    identity: dict = field(default_factory=dict)  # extra settings a resume must share
    latency: Callable[[ArchSpec], float] | None = None  # predicted ms (for max_latency)
    # added to the metric to give the fitness (e.g. ``fnacli.search.remap_prior.fitness_term``)
    fitness_term: Callable[[ArchSpec], float] | None = None
    params: Callable[[ArchSpec], float] | None = None  # backbone parameters (for max_params)
    # the signal received (``fnacli.interrupt``), agreed by every process evaluating
    signal: Callable[[], int | None] = interrupt.pending
    cache: dict[str, Candidate] = field(default_factory=dict)
    _madds: dict[str, float] = field(default_factory=dict)
    _memo: dict[str, dict[str, float]] = field(default_factory=dict)
    _budget: int | None = None  # evaluations left before ``run`` stops (``stop_after``)
    _rewrite: tuple[list[str], int] | None = None  # see ``_compact_history``

    # -- public ----------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_after: int | None = None) -> SearchResult:
        """Search; with ``resume`` continue from the state file. ``stop_after`` stops after
        that many evaluations of this run (tests and time-boxed jobs; resume continues)."""
        cfg = self.config
        self._check_feasible()
        rng = random.Random(cfg.seed)
        done, population, topk = 0, [], []
        if resume:
            done, population, topk, rng = self._load_state()
            if self.on_round:
                self.on_round({"event": "resume", "generation": done,
                               "evaluated": len(self.cache)})
        elif self.write:  # start over: no stale state may be resumed later
            if self.history_path is not None:
                write_text_atomic(self.history_path, "")
            # the state before generation 0, so an interruption inside it resumes too (and
            # reuses the evaluations the history recorded)
            self._save_state(0, [], [], rng)
        self._budget = stop_after
        with interrupt.deferred():
            return self._rounds(done, population, topk, rng)

    def _rounds(self, done: int, population: list[Candidate], topk: list[Candidate],
                rng: random.Random) -> SearchResult:
        cfg = self.config
        while done < cfg.rounds:
            genomes = self._draw(done, cfg.parents_of(population, topk), rng)
            if not genomes:
                self._log_round({"event": "stop", "generation": done,
                                 "reason": "no new architecture within the limit is left"})
                self._compact_history()
                break
            t0 = time.perf_counter()
            try:
                evaluated = self._evaluate(genomes, done)
            except _Stop:
                return self._result(population, topk, done, finished=False)
            population = evaluated
            topk = sorted({c.key: c for c in [*topk, *population]}.values(),
                          key=Candidate.rank_key)[:cfg.parents]
            done += 1
            self._log_round(self._round_record(done - 1, population, topk,
                                               time.perf_counter() - t0))
            self._compact_history()
            self._save_state(done, population, topk, rng)
        return self._result(population, topk, done, finished=True)

    def ranked(self, k: int | None = None) -> list[Candidate]:
        """Every evaluated candidate, best first."""
        out = sorted(self.cache.values(), key=Candidate.rank_key)
        return out if k is None else out[:k]

    # -- drawing ---------------------------------------------------------------------------
    def madds(self, g: Genome, key: str | None = None) -> float:
        key = key or self.encoding.key(g)
        if key not in self._madds:
            self._madds[key] = float(self.cost(self.encoding.arch(g)))
        return self._madds[key]

    def latency_ms(self, g: Genome) -> float:
        if self.latency is None:
            raise UserError("--max-latency needs --latency-table")
        return float(self.latency(self.encoding.arch(g)))

    def _ok(self, g: Genome, taken: set[str]) -> bool:
        key = self.encoding.key(g)
        if key in self.cache or key in taken:
            return False
        if not within(self.madds(g, key), self.config.min_madds, self.config.max_madds):
            return False
        if self.config.max_latency is not None and \
                self.latency_ms(g) > self.config.max_latency:
            return False
        if self.config.max_params is not None and self.params is not None and \
                self.params(self.encoding.arch(g)) > self.config.max_params:
            return False
        taken.add(key)
        return True

    def _fill(self, out: list[Genome], want: int, make: Callable[[], Genome],
              taken: set[str]) -> None:
        tries = 0
        while len(out) < want and tries < self.config.max_tries * want:
            tries += 1
            g = make()
            if self._ok(g, taken):
                out.append(g)

    def _draw(self, done: int, parent_pool: list[Candidate], rng: random.Random
              ) -> list[Genome]:
        cfg, enc = self.config, self.encoding
        want = cfg.population
        if cfg.strategy == "random":
            want = min(want, cfg.total_candidates - done * cfg.population)
        out: list[Genome] = []
        taken: set[str] = set()
        if cfg.strategy == "evolution" and done > 0 and parent_pool:
            parents = [c.genome for c in parent_pool]
            self._fill(out, want // 2,
                       lambda: enc.mutate(rng.choice(parents), rng, cfg.mutation_prob), taken)
            self._fill(out, want,
                       lambda: enc.crossover(rng.choice(parents), rng.choice(parents), rng),
                       taken)
        self._fill(out, want, lambda: enc.random(rng), taken)
        if done == 0 and not out:
            flags = " / ".join(f for f, v in (("--min-madds", cfg.min_madds),
                                              ("--max-madds", cfg.max_madds),
                                              ("--max-latency", cfg.max_latency),
                                              ("--max-params", cfg.max_params)) if v)
            raise UserError(f"no architecture within {flags} was drawn in "
                            f"{cfg.max_tries * want} tries; raise {flags}")
        return out

    def _check_feasible(self) -> None:
        lat = self.config.max_latency
        if lat is not None:
            if self.latency is None:
                raise UserError("--max-latency needs --latency-table")
            fastest = self.latency_ms(self.encoding.cheapest(self.latency))
            if fastest > lat:
                raise UserError(f"--max-latency {lat:g}ms is below the fastest architecture "
                                f"of the space by the latency table ({fastest:.3f} ms)")
        check_reachable(self.encoding, self.cost, self.config.min_madds, self.config.max_madds)
        if self.config.max_params is not None and self.params is not None:
            least = self.params(self.encoding.arch(self.encoding.cheapest(self.params)))
            if least > self.config.max_params:
                from fnacli.budget import format_value

                raise UserError(f"--max-params {format_value('params', self.config.max_params)}"
                                f" is below the smallest architecture of the space "
                                f"({format_value('params', least)} params; reachable: "
                                f"--max-params >= {format_value('params', least)})")

    # -- evaluating ------------------------------------------------------------------------
    def _evaluate(self, genomes: list[Genome], generation: int) -> list[Candidate]:
        out: list[Candidate] = []
        todo: list[tuple[Genome, str]] = []
        for g in genomes:
            key = self.encoding.key(g)
            if key in self._memo:  # evaluated before an interruption: same settings, same result
                out.append(self._add(g, key, self._memo.pop(key), generation, reused=True))
            else:
                todo.append((g, key))
        for lo in range(0, len(todo), self.chunk):
            part = todo[lo:lo + self.chunk]
            if self._budget is not None:
                if self._budget <= 0:
                    raise _Stop
                self._budget -= len(part)
            stats = self.evaluate([g for g, _ in part])
            for (g, key), st in zip(part, stats, strict=True):
                out.append(self._add(g, key, st, generation, reused=False))
            if sig := self.signal():
                # finished rounds are in the state, this one's evaluations in the history:
                # --resume reuses them
                where = (f"the search state {self.state_path} ({generation} generations done)"
                         if self.state_path is not None else None)
                if where and self.history_path is not None:
                    where += (f" and {len(out)} evaluations of generation {generation + 1} in "
                              f"{self.history_path}")
                raise interrupt.stop(sig, where)
        order = {self.encoding.key(g): i for i, g in enumerate(genomes)}
        return sorted(out, key=lambda c: order[c.key])

    def _add(self, g: Genome, key: str, stats: dict[str, float], generation: int,
             reused: bool) -> Candidate:
        metric = self.config.metric
        if metric not in stats:
            raise UserError(f"--metric {metric!r}: not among the evaluation's numbers "
                            f"({', '.join(stats)})")
        extra = self.fitness_term(self.encoding.arch(g)) if self.fitness_term else 0.0
        c = Candidate(key, tuple(g), self.madds(g, key), float(stats[metric]) + extra,
                      {k: float(v) for k, v in stats.items()}, generation)
        self.cache[key] = c
        self._append({"event": "candidate", **c.to_dict(), "reused": reused})
        if self.on_candidate:
            self.on_candidate(c, reused)
        return c

    # -- records, state --------------------------------------------------------------------
    def _round_record(self, generation: int, population: list[Candidate],
                      topk: list[Candidate], seconds: float) -> dict:
        fit = [c.fitness for c in population]
        best = min(population, key=Candidate.rank_key)
        return {"event": "generation", "generation": generation, "strategy": self.config.strategy,
                "population": len(population), "best": best.fitness,
                "median": statistics.median(fit), "best_madds": best.madds,
                "median_madds": statistics.median(c.madds for c in population),
                "top_fitness": topk[0].fitness, "top_madds": topk[0].madds,
                "top_key": topk[0].key, "evaluated": len(self.cache),
                "seconds": round(seconds, 3)}

    def _log_round(self, record: dict) -> None:
        self._append(record)
        if self.on_round:
            self.on_round(record)

    def _append(self, record: dict) -> None:
        if self.write and self.history_path is not None:
            with self.history_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _identity(self) -> dict:
        return json.loads(json.dumps({**self.config.identity(), **self.identity,
                                      "space": self.encoding.space.to_dict()}, sort_keys=True))

    def _save_state(self, done: int, population: list[Candidate], topk: list[Candidate],
                    rng: random.Random) -> None:
        if not self.write or self.state_path is None:
            return
        version, internal, gauss = rng.getstate()
        state = {"format": STATE_FORMAT, "identity": self._identity(), "rounds": done,
                 "population": [c.key for c in population], "topk": [c.key for c in topk],
                 "cache": [c.to_dict() for c in self.cache.values()],
                 "rng": [version, list(internal), gauss]}
        write_text_atomic(self.state_path, json.dumps(state))

    def _load_state(self) -> tuple[int, list[Candidate], list[Candidate], random.Random]:
        path = self.state_path
        if path is None or not path.is_file():
            raise UserError(f"{path}: no search state to resume from (run without --resume)")
        try:
            state = load_json_text(path.read_text(), path)
            if not isinstance(state, dict):
                raise TypeError("not a JSON object")
            if state.get("format") != STATE_FORMAT:
                raise ValueError(state.get("format"))
            saved = state["identity"]
            self.cache = {d["key"]: Candidate.from_dict(d) for d in state["cache"]}
            population = [self.cache[k] for k in state["population"]]
            topk = [self.cache[k] for k in state["topk"]]
            version, internal, gauss = state["rng"]
            rng = random.Random()
            rng.setstate((version, tuple(internal), gauss))
            done = int(state["rounds"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a readable fnacli search state ({type(e).__name__}: "
                            f"{e})") from None
        check_identity(saved, self._identity(), path)
        self._read_history(done)
        return done, population, topk, rng

    def _read_history(self, done: int) -> None:
        """Evaluations of the unfinished round are remembered (``_memo``) so the resumed run
        does not pay for them again; the history is cut back to the finished rounds later
        (``_compact_history``), once every process has read it."""
        if self.history_path is None or not self.history_path.is_file():
            return
        text = self.history_path.read_text()
        keep = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut by the interruption
            if not isinstance(rec, dict):
                continue
            if rec.get("generation", 0) < done:
                keep.append(line)
            elif rec.get("event") == "candidate" and rec["key"] not in self.cache:
                self._memo[rec["key"]] = rec["stats"]
        self._rewrite = (keep, len(text.encode()))

    def _compact_history(self) -> None:
        """After the first round of a resumed run: the history reads like one uninterrupted
        run (the finished rounds, then what this run appended)."""
        if self._rewrite is None or not self.write or self.history_path is None:
            return
        keep, offset = self._rewrite
        with self.history_path.open("rb") as f:
            f.seek(offset)
            new = f.read().decode()
        write_text_atomic(self.history_path, "".join(x + "\n" for x in keep) + new)
        self._rewrite = None

    def _result(self, population: list[Candidate], topk: list[Candidate], done: int,
                finished: bool) -> SearchResult:
        return SearchResult(topk, population, done, len(self.cache), finished)


class _Stop(Exception):
    """``stop_after`` evaluations were done."""


# -- the searched checkpoint -------------------------------------------------------------
def random_baseline(encoding: Encoding, cost: Callable[[ArchSpec], float], n: int,
                    max_madds: float | None, seed: int, max_tries: int = 1000,
                    min_madds: float | None = None) -> list[tuple[Genome, float]]:
    """DetNAS's random baseline: ``n`` different architectures drawn uniformly from the space
    (rejection sampling within [``min_madds``, ``max_madds``]), each with its cost. Nothing
    is scored: DetNAS trains each "with exactly the same settings" as the searched one."""
    check_window(min_madds, max_madds)
    check_reachable(encoding, cost, min_madds, max_madds)
    out: list[tuple[Genome, float]] = []
    for _, g in distinct_draws(encoding, random.Random(seed), max_tries * n):
        c = float(cost(encoding.arch(g)))
        if within(c, min_madds, max_madds):
            out.append((g, c))
            if len(out) == n:
                break
    if len(out) < n:
        raise UserError(f"--retrain {n}: only {len(out)} different architectures within "
                        f"--min-madds/--max-madds were drawn in {max_tries * n} tries")
    return out


def distinct_draws(encoding: Encoding, rng: random.Random, max_draws: int
                   ) -> Iterator[tuple[int, Genome]]:
    """Uniform draws of the space, each architecture once, with the number of draws made so
    far (duplicates count): ``max_draws`` draws at most."""
    seen: set[str] = set()
    for draws in range(1, max_draws + 1):
        g = encoding.random(rng)
        if (key := encoding.key(g)) not in seen:
            seen.add(key)
            yield draws, g


def arch_logits(encoding: Encoding, genome: Genome, margin: float = 1.0) -> dict:
    """α/β logit tensors (names of ``fnacli.search.arch``) whose argmax is ``genome``:
    ``margin`` on the chosen candidate, 0 elsewhere."""
    import torch

    from fnacli.search import arch as A

    path = encoding.path(genome)
    alpha = {(s, i): torch.zeros(len(c)) for s, i, c in encoding.ops}
    beta = {s: torch.zeros(len(o)) for s, o in encoding.widths}
    for k, t in alpha.items():
        t[path.ops[k]] = margin
    for s, t in beta.items():
        t[path.widths[s]] = margin
    return A.to_tensors(alpha, beta)


def candidates_meta(cands: Sequence[Candidate], encoding: Encoding) -> list[dict]:
    """The top candidates as checkpoint metadata (``derive --top K`` lists these)."""
    return [{"rank": r + 1, "fitness": c.fitness, "madds": c.madds, "stats": c.stats,
             "generation": c.generation, "genome": list(c.genome),
             "arch": encoding.arch(c.genome).to_dict()} for r, c in enumerate(cands)]
