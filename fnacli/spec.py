"""Architecture specs (``fnacli/arch@1``) and search spaces (``fnacli/space@1``).

Specs are plain frozen dataclasses: parsed and validated from JSON with messages that name
the stage and field, serialised canonically (fixed key order) so ``derive | remap`` diffs
cleanly. Channel numbers are absolute (width multipliers already applied).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from fnacli.errors import UserError

ARCH_SCHEMA = "fnacli/arch@1"
SPACE_SCHEMA = "fnacli/space@1"
KERNELS = (3, 5, 7)
SKIP = "skip"
_OP_RE = re.compile(r"^k(\d+)_e(\d+)$")
# What can be built: far beyond any MobileNetV2-family network (widest stage 320 x 1.4,
# expansions 3-6, depths ≤ 4), small enough that a spec never reaches the allocator with
# numbers it cannot serve.
MAX_CHANNELS = 8192
MAX_EXPAND = 16
MAX_DEPTH = 64
MAX_STAGES = 32

# MobileNetV2 (Sandler et al., Table 2): (expansion, out, layers, stride) per stage.
MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MBV2_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# timm's MobileNetV2 names -> (width, depth multiplier, stem and head fixed at 32/1280). The
# "d" variants scale the depth of every stage but the first and last (rounding up).
TIMM_MBV2 = {"mobilenetv2_035": (0.35, 1.0, False), "mobilenetv2_050": (0.5, 1.0, False),
             "mobilenetv2_075": (0.75, 1.0, False), "mobilenetv2_100": (1.0, 1.0, False),
             "mobilenetv2_140": (1.4, 1.0, False), "mobilenetv2_110d": (1.1, 1.2, True),
             "mobilenetv2_120d": (1.2, 1.4, True)}


@dataclass(frozen=True, order=True)
class Op:
    """One MBConv choice: depthwise kernel and expansion ratio (``kK_eE``)."""

    kernel: int
    expand: int

    def __str__(self) -> str:
        return f"k{self.kernel}_e{self.expand}"

    @classmethod
    def parse(cls, text: str, where: str = "op") -> Op:
        m = _OP_RE.match(text) if isinstance(text, str) else None
        if not m:
            raise UserError(f"{where}: expected an op like 'k3_e6' (kernel 3/5/7, expansion ≥1), "
                            f"got {text!r}")
        k, e = int(m.group(1)), int(m.group(2))
        if k not in KERNELS:
            raise UserError(f"{where}: kernel must be one of 3, 5, 7, got {k} in {text!r}")
        if e < 1:
            raise UserError(f"{where}: expansion must be ≥ 1, got {e} in {text!r}")
        if e > MAX_EXPAND:
            raise UserError(f"{where}: expansion {e} is more than can be built (at most "
                            f"{MAX_EXPAND}) in {text!r}")
        return cls(k, e)


@dataclass(frozen=True)
class Stage:
    out: int
    stride: int
    ops: tuple[Op, ...]

    @property
    def depth(self) -> int:
        return len(self.ops)


@dataclass(frozen=True)
class ArchSpec:
    """A MobileNetV2-family backbone, exactly."""

    stem_out: int
    stem_stride: int
    stages: tuple[Stage, ...]
    head_out: int | None = None

    # -- derived facts detectors and the remapper need ---------------------------------
    def layers(self) -> list[tuple[int, int, int, int, Op, int]]:
        """Every MBConv layer as (stage index, layer index, in, out, op, stride)."""
        rows, cin = [], self.stem_out
        for s, st in enumerate(self.stages):
            for i, op in enumerate(st.ops):
                rows.append((s, i, cin, st.out, op, st.stride if i == 0 else 1))
                cin = st.out
        return rows

    def stage_strides(self) -> list[int]:
        """Cumulative output stride after each stage."""
        out, total = [], self.stem_stride
        for st in self.stages:
            total *= st.stride
            out.append(total)
        return out

    @property
    def out_channels(self) -> int:
        return self.head_out if self.head_out else self.stages[-1].out

    def to_dict(self) -> dict:
        d: dict = {"schema": ARCH_SCHEMA,
                   "stem": {"out": self.stem_out, "stride": self.stem_stride},
                   "stages": [{"out": s.out, "stride": s.stride, "ops": [str(o) for o in s.ops]}
                              for s in self.stages]}
        if self.head_out:
            d["head"] = {"out": self.head_out}
        return d

    def to_json(self, compact: bool = False) -> str:
        """Canonical text: fixed key order, one stage per line (or one line with ``compact``)."""
        d = self.to_dict()
        if compact:
            return json.dumps(d, separators=(",", ":"))
        stages = ",\n".join("    " + json.dumps(s) for s in d["stages"])
        lines = ['{', f'  "schema": "{ARCH_SCHEMA}",', f'  "stem": {json.dumps(d["stem"])},',
                 f'  "stages": [\n{stages}\n  ]' + ("," if "head" in d else "")]
        if "head" in d:
            lines.append(f'  "head": {json.dumps(d["head"])}')
        return "\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, d: object, source: str = "spec") -> ArchSpec:
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object with schema {ARCH_SCHEMA!r}")
        schema = d.get("schema")
        if schema is None and isinstance(d.get("spec"), dict):
            # a report that carries the architecture ('fnacli derive --json', 'remap --json'):
            # pipes connect without jq
            return cls.from_dict(d["spec"], f"{source}: spec")
        if schema == SPACE_SCHEMA:
            raise UserError(f"{source}: this is a search space ({SPACE_SCHEMA}); an architecture "
                            f"({ARCH_SCHEMA}) is needed here (use 'fnacli derive' to get one)")
        if schema != ARCH_SCHEMA:
            raise UserError(f"{source}: schema must be {ARCH_SCHEMA!r}, got {schema!r}")
        _no_extra(d, {"schema", "stem", "stages", "head"}, source)
        stem_out, stem_stride = _parse_stem(d, source)
        stages_raw = _get_list(d, "stages", source)
        _check_stages(len(stages_raw), source)
        stages = []
        for i, s in enumerate(stages_raw):
            where = f"{source}: stages[{i}]"
            if not isinstance(s, dict):
                raise UserError(f"{where}: expected an object with out, stride, ops")
            _no_extra(s, {"out", "stride", "ops"}, where)
            out = _get_int(s, "out", where)
            stride = _get_stride(s, where)
            ops_raw = _get_list(s, "ops", where)
            _check_depth(len(ops_raw), where)
            ops = []
            for j, o in enumerate(ops_raw):
                if o == SKIP:
                    raise UserError(f"{where}.ops[{j}]: 'skip' is not allowed in an architecture "
                                    "(drop the layer; depth is len(ops))")
                ops.append(Op.parse(o, f"{where}.ops[{j}]"))
            stages.append(Stage(out, stride, tuple(ops)))
        return cls(stem_out, stem_stride, tuple(stages), _parse_head(d, source))


# -- search spaces -------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceStage:
    """A stage of a search space. Fixed stages have ``layers == len(fixed_ops)``."""

    outs: tuple[int, ...]  # channel candidates (one entry when fixed)
    stride: int
    layers: int  # max depth
    candidates: tuple[str, ...] = ()  # op candidates for searchable layers ('skip' allowed)
    fixed_ops: tuple[Op, ...] = ()  # the layers of a non-searchable stage

    @property
    def searchable(self) -> bool:
        return not self.fixed_ops

    def layer_candidates(self, i: int) -> tuple[str, ...]:
        """Candidate ops of layer i (no 'skip' for a stage's first layer)."""
        if not self.searchable:
            return (str(self.fixed_ops[i]),)
        return tuple(c for c in self.candidates if not (i == 0 and c == SKIP))


@dataclass(frozen=True)
class SpaceSpec:
    stem_out: int
    stem_stride: int
    stages: tuple[SpaceStage, ...]
    head_out: int | None = None
    name: str = field(default="custom", compare=False)

    def to_dict(self) -> dict:
        stages = []
        for s in self.stages:
            if s.searchable:
                out: object = s.outs[0] if len(s.outs) == 1 else list(s.outs)
                stages.append({"out": out, "stride": s.stride, "layers": s.layers,
                               "ops": list(s.candidates)})
            else:
                stages.append({"out": s.outs[0], "stride": s.stride,
                               "ops": [str(o) for o in s.fixed_ops]})
        d: dict = {"schema": SPACE_SCHEMA,
                   "stem": {"out": self.stem_out, "stride": self.stem_stride},
                   "stages": stages}
        if self.head_out:
            d["head"] = {"out": self.head_out}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def num_architectures(self) -> int:
        """Distinct architectures (skips collapse: a stage's depth and op sequence count once)."""
        total = 1
        for s in self.stages:
            if not s.searchable:
                continue
            nonskip = [c for c in s.candidates if c != SKIP]
            has_skip = SKIP in s.candidates
            depths = range(1, s.layers + 1) if has_skip else [s.layers]
            total *= len(s.outs) * sum(len(nonskip) ** d for d in depths)
        return total

    def max_arch(self) -> ArchSpec:
        """The widest, deepest member with the first non-skip candidate everywhere."""
        stages = []
        for s in self.stages:
            if s.searchable:
                op = Op.parse(next(c for c in s.candidates if c != SKIP))
                stages.append(Stage(max(s.outs), s.stride, (op,) * s.layers))
            else:
                stages.append(Stage(s.outs[0], s.stride, s.fixed_ops))
        return ArchSpec(self.stem_out, self.stem_stride, tuple(stages), self.head_out)

    @classmethod
    def from_dict(cls, d: object, source: str = "space") -> SpaceSpec:
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object with schema {SPACE_SCHEMA!r}")
        if d.get("schema") != SPACE_SCHEMA:
            raise UserError(f"{source}: schema must be {SPACE_SCHEMA!r}, got {d.get('schema')!r}")
        _no_extra(d, {"schema", "stem", "stages", "head", "name"}, source)
        stem_out, stem_stride = _parse_stem(d, source)
        stages = []
        stages_raw = _get_list(d, "stages", source)
        _check_stages(len(stages_raw), source)
        for i, s in enumerate(stages_raw):
            where = f"{source}: stages[{i}]"
            if not isinstance(s, dict):
                raise UserError(f"{where}: expected an object")
            _no_extra(s, {"out", "stride", "ops", "layers"}, where)
            stride = _get_stride(s, where)
            ops_raw = _get_list(s, "ops", where)
            _check_depth(len(ops_raw), where)
            if "layers" in s:
                layers = _get_int(s, "layers", where, maximum=MAX_DEPTH)
                outs = _parse_outs(s.get("out"), where)
                cands = []
                for j, o in enumerate(ops_raw):
                    if o != SKIP:
                        Op.parse(o, f"{where}.ops[{j}]")
                    if o in cands:
                        raise UserError(f"{where}.ops[{j}]: duplicate candidate {o!r}")
                    cands.append(o)
                if all(c == SKIP for c in cands):
                    raise UserError(f"{where}.ops: needs at least one candidate besides 'skip'")
                stages.append(SpaceStage(outs, stride, layers, tuple(cands)))
            else:
                out = _get_int(s, "out", where)
                ops = tuple(Op.parse(o, f"{where}.ops[{j}]") for j, o in enumerate(ops_raw))
                stages.append(SpaceStage((out,), stride, len(ops), fixed_ops=ops))
        name = d.get("name", "custom")
        return cls(stem_out, stem_stride, tuple(stages), _parse_head(d, source), str(name))


# -- field helpers -------------------------------------------------------------------------
def _field(where: str, key: str) -> str:
    """'src: stages[1]' + 'ops' -> 'src: stages[1].ops'; a bare source 'src' -> 'src: ops'."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _no_extra(d: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise UserError(f"{where}: unknown field {extra[0]!r} "
                        f"(allowed: {', '.join(sorted(allowed))})")


def _get_int(d: dict, key: str, where: str, minimum: int = 1,
             maximum: int = MAX_CHANNELS) -> int:
    if key not in d:
        raise UserError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise UserError(f"{_field(where, key)}: expected an integer ≥ {minimum}, got "
                        f"{_short_repr(v)}")
    if v > maximum:
        raise UserError(f"{_field(where, key)}: {v} is more than can be built (at most "
                        f"{maximum})")
    return v


def _short_repr(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_depth(n: int, where: str) -> None:
    if n > MAX_DEPTH:
        raise UserError(f"{where}: {n} layers in one stage; at most {MAX_DEPTH} can be built")


def _check_stages(n: int, source: str) -> None:
    if n > MAX_STAGES:
        raise UserError(f"{source}: {n} stages; at most {MAX_STAGES} can be built")


def _get_stride(d: dict, where: str) -> int:
    s = _get_int(d, "stride", where)
    if s not in (1, 2):
        raise UserError(f"{where}.stride: expected 1 or 2, got {s}")
    return s


def _get_list(d: dict, key: str, where: str) -> list:
    if key not in d:
        raise UserError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, list) or not v:
        raise UserError(f"{_field(where, key)}: expected a non-empty list, got {v!r}")
    return v


def _parse_stem(d: dict, source: str) -> tuple[int, int]:
    stem = d.get("stem")
    if not isinstance(stem, dict):
        raise UserError(f"{source}: missing or invalid 'stem' "
                        "(expected {\"out\": N, \"stride\": 2})")
    _no_extra(stem, {"out", "stride"}, f"{source}: stem")
    return _get_int(stem, "out", f"{source}: stem"), _get_stride(stem, f"{source}: stem")


def _parse_head(d: dict, source: str) -> int | None:
    head = d.get("head")
    if head is None:
        return None
    if not isinstance(head, dict):
        raise UserError(f"{source}: 'head' must be an object like {{\"out\": 1280}} or absent")
    _no_extra(head, {"out"}, f"{source}: head")
    return _get_int(head, "out", f"{source}: head")


def _parse_outs(v: object, where: str) -> tuple[int, ...]:
    def ok(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_CHANNELS

    if ok(v):
        return (v,)  # type: ignore[return-value]
    if isinstance(v, int | list) and not isinstance(v, bool) and not (
            isinstance(v, list) and all(ok(x) for x in v)):
        raise UserError(f"{where}.out: channel numbers must be integers from 1 to "
                        f"{MAX_CHANNELS}, got {_short_repr(v)}")
    if isinstance(v, list) and v and all(ok(x) for x in v):
        if len(set(v)) != len(v):
            raise UserError(f"{where}.out: duplicate channel candidates in {v}")
        return tuple(sorted(v))
    if isinstance(v, dict):
        _no_extra(v, {"min", "max", "step"}, f"{where}.out")
        lo, hi = _get_int(v, "min", f"{where}.out"), _get_int(v, "max", f"{where}.out")
        step = _get_int(v, "step", f"{where}.out")
        if hi < lo:
            raise UserError(f"{where}.out: max ({hi}) is below min ({lo})")
        return tuple(range(lo, hi + 1, step))  # max is inclusive
    raise UserError(f"{where}.out: expected an integer, a list of integers or "
                    f"{{\"min\", \"max\", \"step\"}}, got {v!r}")


# -- built-ins -----------------------------------------------------------------------------
def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (nearest multiple, never more than 10% down)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mobilenetv2(width: float = 1.0, depth: float = 1.0, fix_stem_head: bool = False
                ) -> ArchSpec:
    """torchvision's ``mobilenet_v2(width_mult=width)`` as a spec; ``depth`` and
    ``fix_stem_head`` give timm's ``mobilenetv2_110d``/``_120d`` (``TIMM_MBV2``)."""
    last = len(MBV2_SETTING) - 1
    stages = tuple(
        Stage(make_divisible(c * width), s,
              (Op(3, t),) * (n if i in (0, last) else math.ceil(n * depth)))
        for i, (t, c, n, s) in enumerate(MBV2_SETTING))
    if fix_stem_head:
        return ArchSpec(32, 2, stages, 1280)
    return ArchSpec(make_divisible(32 * width), 2, stages, make_divisible(1280 * max(1.0, width)))


@cache
def _published() -> dict:
    text = resources.files("fnacli").joinpath("data/fna_architectures.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


# Max depths of the searchable (e6) stages: FNA's detection space, and its segmentation space.
FNA_DEPTHS = (4, 4, 4, 4, 4, 1)
FNA_SEG_DEPTHS = (4, 4, 6, 6, 4, 1)


def _fna_space(channels: bool, depths: tuple[int, ...] = FNA_DEPTHS,
               name: str | None = None) -> SpaceSpec:
    # FNA: every e6 stage searchable, {3,5,7}x{3,6} + skip, max depths 4,4,4,4,4,1
    # (4,4,6,6,4,1 for segmentation). Jung et al. Table I adds per-block output-channel
    # ranges (max inclusive).
    cands = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", SKIP)
    ranges = [(16, 28, 2), (28, 48, 2), (48, 72, 2), (72, 128, 4), (128, 256, 4), (256, 400, 4)]
    base = mobilenetv2()
    stages = [SpaceStage((base.stages[0].out,), 1, 1, fixed_ops=base.stages[0].ops)]
    for (_, c, _, s), depth, r in zip(MBV2_SETTING[1:], depths, ranges, strict=True):
        outs = tuple(range(r[0], r[1] + 1, r[2])) if channels else (c,)
        # a depth-1 stage has no layer that may be skipped
        stages.append(SpaceStage(outs, s, depth, cands if depth > 1 else cands[:-1]))
    return SpaceSpec(32, 2, tuple(stages), 1280,
                     name or ("fna-channels" if channels else "fna"))


def builtin_arch_names() -> list[str]:
    names = [f"mobilenetv2-{w}" for w in MBV2_WIDTHS]
    return ["mobilenetv2", *names, *TIMM_MBV2, *[k for k in _published() if k != "mobilenetv2"]]


BUILTIN_SPACES = ("fna", "fna-channels", "fna-seg")


def builtin_arch(name: str) -> ArchSpec | None:
    if name == "mobilenetv2":
        return mobilenetv2()
    m = re.fullmatch(r"mobilenetv2-(\d+(?:\.\d+)?)", name)
    if m and float(m.group(1)) in MBV2_WIDTHS:
        return mobilenetv2(float(m.group(1)))
    if name in TIMM_MBV2:
        return mobilenetv2(*TIMM_MBV2[name])
    if name in _published():
        return ArchSpec.from_dict(_published()[name], f"built-in {name}")
    return None


def builtin_space(name: str) -> SpaceSpec | None:
    if name == "fna-seg":
        return _fna_space(channels=False, depths=FNA_SEG_DEPTHS, name=name)
    if name in BUILTIN_SPACES:
        return _fna_space(channels=name == "fna-channels")
    return None


def _looks_like_name(arg: str) -> bool:
    # 'mobilenetv2-0.75' has a suffix ('.75') yet is a name: only a path separator or a
    # .json suffix marks something that can only be a file.
    p = Path(arg)
    return (arg != "-" and "/" not in arg and p.suffix.lower() != ".json" and not p.exists())


def as_arch(value: ArchSpec | dict | str | Path, what: str = "spec") -> ArchSpec:
    """An architecture given as an ``ArchSpec``, its dict (or a report carrying one under
    ``spec``), a built-in name, a JSON file (``str`` or ``Path``) or ``-`` (stdin)."""
    if isinstance(value, ArchSpec):
        return value
    if isinstance(value, dict):
        return ArchSpec.from_dict(value, what)
    if isinstance(value, str | Path):
        return load_arch(value)
    raise UserError(f"{what}: expected an ArchSpec, a dict, a built-in name or a file, got "
                    f"{type(value).__name__}")


def as_space(value: SpaceSpec | dict | str | Path, what: str = "space") -> SpaceSpec:
    """A search space given as a ``SpaceSpec``, its dict, a built-in name, a JSON file or
    ``-``."""
    if isinstance(value, SpaceSpec):
        return value
    if isinstance(value, dict):
        return SpaceSpec.from_dict(value, what)
    if isinstance(value, str | Path):
        return load_space(value)
    raise UserError(f"{what}: expected a SpaceSpec, a dict, a built-in name or a file, got "
                    f"{type(value).__name__}")


def load_arch(arg: str | Path) -> ArchSpec:
    """An arch spec from a built-in name, a JSON file, or `-` (stdin)."""
    from fnacli.io import load_json_text, read_text_arg

    arg = str(arg)
    if _looks_like_name(arg):
        spec = builtin_arch(arg)
        if spec is None:
            raise UserError(f"{arg}: unknown built-in architecture (known: "
                            f"{', '.join(builtin_arch_names())}) and no such file")
        return spec
    text, name = read_text_arg(arg, "spec")
    return ArchSpec.from_dict(load_json_text(text, name), name)


def load_space(arg: str | Path) -> SpaceSpec:
    """A search space from a built-in name, a JSON file, or `-` (stdin)."""
    from fnacli.io import load_json_text, read_text_arg

    arg = str(arg)
    if _looks_like_name(arg):
        space = builtin_space(arg)
        if space is None:
            raise UserError(f"{arg}: unknown built-in space (known: {', '.join(BUILTIN_SPACES)}) "
                            "and no such file")
        return space
    text, name = read_text_arg(arg, "space")
    return SpaceSpec.from_dict(load_json_text(text, name), name)
