"""Architecture parameters of a space and what is derived from them.

α: for every layer ``l`` of every searchable stage ``s``, logits over
``space.stages[s].layer_candidates(l)`` (tensor ``arch.alpha.{s}.{l}``). β: for every stage with
more than one channel candidate, logits over its ascending ``outs`` (tensor ``arch.beta.{s}``).
These names and orders are shared with the cost lookup table (``fnacli.lut``).

The minimum-depth rule (``min_depth``, against collapse to all-``skip``): layers ``l < min_depth``
of a stage cannot be skipped: their ``skip`` probability is zero for sampling, for the relaxed
forward, for the cost and for deriving.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Mapping, Sequence

import torch

from fnacli.errors import UserError
from fnacli.nn.supernet import Path, op_choices, path_to_arch, width_choices
from fnacli.spec import SKIP, ArchSpec, SpaceSpec, Stage

ALPHA = "arch.alpha"
BETA = "arch.beta"
_NAME_RE = re.compile(r"^arch\.(alpha|beta)\.(\d+)(?:\.(\d+))?$")
INIT_STD = 1e-3  # FNA initialises α with 1e-3 · N(0, 1)

AlphaDict = dict[tuple[int, int], torch.Tensor]
BetaDict = dict[int, torch.Tensor]


def alpha_name(s: int, i: int) -> str:
    return f"{ALPHA}.{s}.{i}"


def beta_name(s: int) -> str:
    return f"{BETA}.{s}"


def is_arch_name(name: str) -> bool:
    return name.startswith("arch.")


def init_logits(space: SpaceSpec, seed: int = 0, std: float = INIT_STD
                ) -> tuple[AlphaDict, BetaDict]:
    """Near-zero logits: ``std · N(0, 1)`` from a generator seeded with ``seed`` (std 0: zeros)."""
    g = torch.Generator().manual_seed(seed)
    alpha = {(s, i): std * torch.randn(len(c), generator=g) for s, i, c in op_choices(space)}
    beta = {s: std * torch.randn(len(o), generator=g) for s, o in width_choices(space)}
    return alpha, beta


def to_tensors(alpha: Mapping[tuple[int, int], torch.Tensor], beta: Mapping[int, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    out = {alpha_name(s, i): t.detach().float().cpu().clone() for (s, i), t in alpha.items()}
    out.update({beta_name(s): t.detach().float().cpu().clone() for s, t in beta.items()})
    return out


def from_tensors(space: SpaceSpec, tensors: Mapping[str, torch.Tensor], source: str
                 ) -> tuple[AlphaDict, BetaDict]:
    """α/β logits from checkpoint tensors, checked against the space (one-line errors)."""
    alpha: AlphaDict = {}
    beta: BetaDict = {}
    for s, i, cands in op_choices(space):
        t = tensors.get(alpha_name(s, i))
        if t is None:
            raise UserError(f"{source}: missing tensor {alpha_name(s, i)!r} (α of stage {s} layer "
                            f"{i}); is this a supernet of this space?")
        if tuple(t.shape) != (len(cands),):
            raise UserError(f"{source}: {alpha_name(s, i)} has shape {tuple(t.shape)}, expected "
                            f"({len(cands)},) for candidates {', '.join(cands)}")
        alpha[(s, i)] = t.detach().float().clone()
    for s, outs in width_choices(space):
        t = tensors.get(beta_name(s))
        if t is None:
            raise UserError(f"{source}: missing tensor {beta_name(s)!r} (β of stage {s})")
        if tuple(t.shape) != (len(outs),):
            raise UserError(f"{source}: {beta_name(s)} has shape {tuple(t.shape)}, expected "
                            f"({len(outs)},) for widths {list(outs)}")
        beta[s] = t.detach().float().clone()
    for name in tensors:
        if is_arch_name(name) and not _NAME_RE.match(name):
            raise UserError(f"{source}: unexpected architecture tensor {name!r}")
    return alpha, beta


def _skip_banned(space: SpaceSpec, s: int, i: int, min_depth: int) -> bool:
    return i < min_depth and SKIP in space.stages[s].layer_candidates(i)


def probs(space: SpaceSpec, alpha: Mapping[tuple[int, int], torch.Tensor],
          beta: Mapping[int, torch.Tensor], min_depth: int = 0) -> tuple[AlphaDict, BetaDict]:
    """softmax(α), softmax(β) (differentiable), with skip removed where ``min_depth`` bans it."""
    a: AlphaDict = {}
    for (s, i), logits in alpha.items():
        if _skip_banned(space, s, i, min_depth):
            j = space.stages[s].layer_candidates(i).index(SKIP)
            logits = logits.masked_fill(torch.arange(len(logits), device=logits.device) == j,
                                        float("-inf"))
        a[(s, i)] = torch.softmax(logits, -1)
    return a, {s: torch.softmax(t, -1) for s, t in beta.items()}


def argmax_path(alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                beta_probs: Mapping[int, torch.Tensor]) -> Path:
    """The most likely choice everywhere (ties go to the first candidate)."""
    return Path({k: int(torch.argmax(p)) for k, p in alpha_probs.items()},
                {s: int(torch.argmax(p)) for s, p in beta_probs.items()})


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of training step ``step``'s path: every process draws the same path, and
    a resumed run the same as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_path(space: SpaceSpec, alpha_probs: Mapping[tuple[int, int], torch.Tensor] | None,
                beta_probs: Mapping[int, torch.Tensor] | None, generator: torch.Generator,
                min_depth: int = 0) -> Path:
    """One path: from the probabilities, or uniformly when they are None (FNA's warm-up)."""
    ops, widths = {}, {}
    for s, i, cands in op_choices(space):
        if alpha_probs is None:
            w = torch.ones(len(cands))
            if _skip_banned(space, s, i, min_depth):
                w[cands.index(SKIP)] = 0.0
        else:
            w = alpha_probs[(s, i)].detach().float().cpu()
        ops[(s, i)] = int(torch.multinomial(w, 1, generator=generator))
    for s, outs in width_choices(space):
        w = torch.ones(len(outs)) if beta_probs is None else beta_probs[s].detach().float().cpu()
        widths[s] = int(torch.multinomial(w, 1, generator=generator))
    return Path(ops, widths)


def one_hot(space: SpaceSpec, path: Path) -> tuple[AlphaDict, BetaDict]:
    """Probabilities selecting exactly ``path`` (for the relaxed forward)."""
    def hot(i: int, n: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(i), n).float()

    a = {(s, i): hot(path.ops.get((s, i), 0), len(c)) for s, i, c in op_choices(space)}
    b = {s: hot(path.widths.get(s, len(o) - 1), len(o)) for s, o in width_choices(space)}
    return a, b


def path_of_arch(space: SpaceSpec, arch: ArchSpec) -> Path:
    """The path that selects ``arch`` (its layers first, then skips); UserError if not in space."""
    if len(arch.stages) != len(space.stages):
        raise UserError(f"architecture has {len(arch.stages)} stages, the space has "
                        f"{len(space.stages)}")
    ops, widths = {}, {}
    for s, (st, sp) in enumerate(zip(arch.stages, space.stages, strict=True)):
        if st.out not in sp.outs:
            raise UserError(f"stage {s}: width {st.out} is not a candidate ({list(sp.outs)})")
        if len(sp.outs) > 1:
            widths[s] = sp.outs.index(st.out)
        if not sp.searchable:
            if st.ops != sp.fixed_ops:
                raise UserError(f"stage {s}: ops differ from the space's fixed ops")
            continue
        if st.depth > sp.layers:
            raise UserError(f"stage {s}: depth {st.depth} exceeds the space's {sp.layers}")
        for i in range(sp.layers):
            cands = sp.layer_candidates(i)
            want = str(st.ops[i]) if i < st.depth else SKIP
            if want not in cands:
                raise UserError(f"stage {s} layer {i}: {want} is not a candidate "
                                f"({', '.join(cands)})")
            ops[(s, i)] = cands.index(want)
    return Path(ops, widths)


def skip_report(space: SpaceSpec, path: Path) -> tuple[int, int]:
    """(skipped layers, layers that could be skipped) in a path."""
    skipped = possible = 0
    for s, i, cands in op_choices(space):
        if SKIP in cands:
            possible += 1
            skipped += cands[path.ops.get((s, i), 0)] == SKIP
    return skipped, possible


def collapse_warning(space: SpaceSpec, path: Path, threshold: float = 0.75,
                     strategy: str | None = "differentiable") -> str | None:
    """A warning when the derived network has (nearly) collapsed to skips, else None. The
    remedies named are those of the search that chose it (``strategy``; None: unknown)."""
    skipped, possible = skip_report(space, path)
    if not (possible and skipped / possible >= threshold):
        return None
    text = f"the derived architecture skips {skipped} of {possible} skippable layers"
    if strategy == "differentiable":
        return (text + " (collapse to 'skip', a known failure of differentiable search); "
                "consider --min-depth N, a larger --warmup-epochs or a smaller --lambda")
    if strategy in ("evolution", "random"):
        return (text + f" (the best candidate of the {strategy} search); a larger --max-madds "
                "admits deeper networks")
    return text


def stage_text(stage: Stage) -> str:
    """One stage of a spec for people: ``width: k3e6 k5e3 …`` (``-`` for no layers)."""
    ops = " ".join(f"k{o.kernel}_e{o.expand}" for o in stage.ops) or "-"
    return f"{stage.out}: {ops}"


def differing_stages(specs: Sequence[ArchSpec]) -> list[int]:
    """The stages whose width or ops are not the same in every one of ``specs``."""
    n = max((len(s.stages) for s in specs), default=0)
    return [i for i in range(n)
            if len({s.stages[i] if i < len(s.stages) else None for s in specs}) > 1]


# -- the K most likely architectures ---------------------------------------------------------
_ENUM_LIMIT = 200_000


def _top_pairs(a: list[tuple[float, object]], b: list[tuple[float, object]], k: int
               ) -> list[tuple[float, tuple]]:
    """Top-k products of two independent lists (each sorted by probability, descending)."""
    a, b = a[:k], b[:k]
    pairs = [(pa * pb, (xa, xb)) for pa, xa in a for pb, xb in b]
    return heapq.nlargest(k, pairs, key=lambda t: t[0])


def _stage_sequences(space: SpaceSpec, s: int, alpha_probs: Mapping[tuple[int, int], torch.Tensor]
                     ) -> tuple[list[tuple[float, tuple[str, ...]]], bool]:
    """Distribution over a stage's op sequences (skips dropped, so different skip positions
    that give the same network add up). Returns (sorted list, exact?)."""
    st = space.stages[s]
    dist: dict[tuple[str, ...], float] = {(): 1.0}
    exact = True
    for i in range(st.layers):
        cands = st.layer_candidates(i)
        p = alpha_probs[(s, i)].detach().double().cpu().tolist()
        new: dict[tuple[str, ...], float] = {}
        for seq, q in dist.items():
            for c, pc in zip(cands, p, strict=True):
                if pc <= 0.0:
                    continue
                key = seq if c == SKIP else (*seq, c)
                new[key] = new.get(key, 0.0) + q * pc
        if len(new) > _ENUM_LIMIT:  # keep the search bounded on huge custom spaces
            new = dict(heapq.nlargest(_ENUM_LIMIT, new.items(), key=lambda t: t[1]))
            exact = False
        dist = new
    return sorted(((q, seq) for seq, q in dist.items()), key=lambda t: -t[0]), exact


def top_k(space: SpaceSpec, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
          beta_probs: Mapping[int, torch.Tensor], k: int
          ) -> tuple[list[tuple[float, ArchSpec]], bool]:
    """The ``k`` most likely distinct architectures and their probabilities.

    An architecture's probability is the sum, over the choice sequences that produce it, of the
    product of its per-choice probabilities. Stages are independent, so a beam of width ``k``
    over stages (each stage's own top-k list) is exact. Returns (list, exact?).
    """
    from fnacli.spec import Op, Stage

    if k < 1:
        raise UserError(f"--top: expected K ≥ 1, got {k}")
    beam: list[tuple[float, tuple]] = [(1.0, ())]
    exact = True
    for s, st in enumerate(space.stages):
        if st.searchable:
            seqs, ok = _stage_sequences(space, s, alpha_probs)
            exact &= ok
        else:
            seqs = [(1.0, tuple(str(o) for o in st.fixed_ops))]
        if s in beta_probs:
            w = beta_probs[s].detach().double().cpu().tolist()
            widths = sorted(((p, c) for c, p in zip(st.outs, w, strict=True) if p > 0.0),
                            key=lambda t: -t[0])
        else:
            widths = [(1.0, st.outs[0])]
        options = _top_pairs(seqs, widths, k)
        beam = [(pb * po, (*xb, xo)) for pb, xb in beam for po, xo in options]
        beam = heapq.nlargest(k, beam, key=lambda t: t[0])
    out = []
    for p, stages in beam:
        specs = tuple(Stage(width, st.stride, tuple(Op.parse(o) for o in seq))
                      for (seq, width), st in zip(stages, space.stages, strict=True))
        out.append((p, ArchSpec(space.stem_out, space.stem_stride, specs, space.head_out)))
    return out, exact


def derive(space: SpaceSpec, alpha: Mapping[tuple[int, int], torch.Tensor],
           beta: Mapping[int, torch.Tensor], min_depth: int = 0) -> tuple[ArchSpec, Path, float]:
    """argmax α per layer (skips dropped), argmax β per stage: (arch, path, the path's
    probability)."""
    with torch.no_grad():
        a, b = probs(space, alpha, beta, min_depth)
    path = argmax_path(a, b)
    logp = sum(math.log(float(p[path.ops[k]])) for k, p in a.items())
    logp += sum(math.log(float(p[path.widths[s]])) for s, p in b.items())
    return path_to_arch(space, path), path, math.exp(logp)


def depth_distribution(space: SpaceSpec, s: int,
                       alpha_probs: Mapping[tuple[int, int], torch.Tensor]) -> dict[int, float]:
    """P(stage ``s`` has depth d): the probability of every op sequence of d layers, summed
    over the positions of its skips."""
    out: dict[int, float] = {}
    for q, seq in _stage_sequences(space, s, alpha_probs)[0]:
        out[len(seq)] = out.get(len(seq), 0.0) + q
    return out


def derive_by_depth(space: SpaceSpec, alpha: Mapping[tuple[int, int], torch.Tensor],
                    beta: Mapping[int, torch.Tensor], min_depth: int = 0
                    ) -> tuple[ArchSpec, Path, float]:
    """Per stage the most likely depth (``depth_distribution``), then the most likely op
    sequence of that depth; argmax β per stage: (arch, path, the architecture's probability,
    skip positions summed).

    Per-layer argmax decides every layer's skip on its own: three layers at skip 0.4 and an op
    0.6 each keep all three although "drop one" has probability 0.43 against 0.22. When the
    search spreads its belief about depth over skip positions, this sees it."""
    from fnacli.spec import Op

    with torch.no_grad():
        a, b = probs(space, alpha, beta, min_depth)
    stages, logp = [], 0.0
    for s, st in enumerate(space.stages):
        width = st.outs[int(torch.argmax(b[s]))] if s in b else st.outs[0]
        if s in b:
            logp += math.log(float(b[s].max()))
        if not st.searchable:
            stages.append(Stage(width, st.stride, st.fixed_ops))
            continue
        seqs = _stage_sequences(space, s, a)[0]
        depths = depth_distribution(space, s, a)
        d = max(depths, key=lambda k: (depths[k], k))  # ties: the deeper
        q, seq = next((q, seq) for q, seq in seqs if len(seq) == d)
        logp += math.log(q) if q > 0 else -math.inf
        stages.append(Stage(width, st.stride, tuple(Op.parse(o) for o in seq)))
    arch = ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)
    return arch, path_of_arch(space, arch), math.exp(logp)


def derive_within(space: SpaceSpec, alpha: Mapping[tuple[int, int], torch.Tensor],
                  beta: Mapping[int, torch.Tensor], cost: Callable[[ArchSpec], float],
                  lo: float | None, hi: float | None, min_depth: int = 0,
                  start: Path | None = None, what: str = "MAdds",
                  flags: str = "--min-madds/--max-madds",
                  text: Callable[[float], str] = lambda c: f"{c / 1e6:.4g}M"
                  ) -> tuple[ArchSpec, Path, float, int]:
    """The argmax path moved into the cost window [``lo``, ``hi``]: (arch, path, the path's
    probability, choices changed).

    Comparisons at matched cost (FNA Table 3, DetNAS Table 4) need every arm inside one
    window, and a cost penalty only steers the expected cost, not the argmax. Greedy: while
    the path is outside, take the single choice change (an op or a width) that lands inside
    at the highest probability, else the one that moves towards the window at the least
    log-probability lost per unit of cost, never overshooting the window's far side.
    ``start``: the path to start from [the per-layer argmax]. ``what``, ``flags`` and
    ``text`` name the cost in the error when no architecture in the window is reached.
    """
    with torch.no_grad():
        a, b = probs(space, alpha, beta, min_depth)
    logp = {("a", k): [math.log(x) if x > 0 else -math.inf for x in p.double().tolist()]
            for k, p in a.items()}
    logp.update({("b", s): [math.log(x) if x > 0 else -math.inf for x in p.double().tolist()]
                 for s, p in b.items()})
    path = start if start is not None else argmax_path(a, b)

    def choice(p: Path, key: tuple) -> int:
        return p.ops[key[1]] if key[0] == "a" else p.widths[key[1]]

    def changed(p: Path, key: tuple, j: int) -> Path:
        if key[0] == "a":
            return Path({**p.ops, key[1]: j}, p.widths)
        return Path(p.ops, {**p.widths, key[1]: j})

    def path_cost(p: Path) -> float:
        return float(cost(path_to_arch(space, p)))

    moves = 0
    c = path_cost(path)
    for _ in range(sum(len(v) for v in logp.values())):
        if (lo is None or c >= lo) and (hi is None or c <= hi):
            break
        down = hi is not None and c > hi
        inside: tuple[float, Path, float] | None = None
        toward: tuple[float, Path, float] | None = None
        for key, lps in logp.items():
            cur = choice(path, key)
            for j, lp in enumerate(lps):
                if j == cur or lp == -math.inf:
                    continue
                q = changed(path, key, j)
                cq = path_cost(q)
                loss = lps[cur] - lp
                if (lo is None or cq >= lo) and (hi is None or cq <= hi):
                    if inside is None or loss < inside[0]:
                        inside = (loss, q, cq)
                elif (cq < c and (lo is None or cq >= lo)) if down else (
                        cq > c and (hi is None or cq <= hi)):
                    rate = loss / abs(c - cq)
                    if toward is None or rate < toward[0]:
                        toward = (rate, q, cq)
        step = inside or toward
        if step is None:
            break
        _, path, c = step
        moves += 1
    if not ((lo is None or c >= lo) and (hi is None or c <= hi)):
        raise UserError(f"no architecture within the {what} window was reached from the "
                        f"argmax path (at {text(c)}); widen {flags}")
    total = sum(logp[("a", k)][path.ops[k]] for k in a) + sum(
        logp[("b", s)][path.widths[s]] for s in b)
    return path_to_arch(space, path), path, math.exp(total), moves
