"""Architecture specs and search spaces: round trips, built-ins, precise error messages,
and the JSON Schemas under docs/schema/."""

from __future__ import annotations

import copy
import io
import json
import re
import sys
from pathlib import Path

import pytest

from fnacli.errors import UserError
from fnacli.spec import (
    MBV2_WIDTHS,
    ArchSpec,
    Op,
    SpaceSpec,
    builtin_arch,
    builtin_arch_names,
    builtin_space,
    load_arch,
    load_space,
    mobilenetv2,
)

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schema"
SPACES = ("fna", "fna-channels")


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", builtin_arch_names())
def test_every_builtin_arch_round_trips(name: str) -> None:
    spec = builtin_arch(name)
    text = spec.to_json()
    again = ArchSpec.from_dict(json.loads(text))
    assert again == spec
    assert again.to_json() == text  # canonical: byte-identical the second time
    assert ArchSpec.from_dict(json.loads(spec.to_json(compact=True))) == spec
    assert list(json.loads(text)) == ["schema", "stem", "stages", "head"]  # stable key order
    assert load_arch(name) == spec


@pytest.mark.parametrize("name", SPACES)
def test_every_builtin_space_round_trips(name: str) -> None:
    space = builtin_space(name)
    again = SpaceSpec.from_dict(json.loads(space.to_json()))
    assert again == space and again.to_json() == space.to_json()
    assert load_space(name) == space


def test_canonical_text_is_one_stage_per_line() -> None:
    lines = mobilenetv2().to_json().splitlines()
    assert lines[1] == '  "schema": "fnacli/arch@1",'
    assert lines[4] == '    {"out": 16, "stride": 1, "ops": ["k3_e1"]},'
    assert len(lines) == 1 + 3 + 7 + 2 + 1


def test_mobilenetv2_widths_match_torchvision() -> None:
    import torch
    from torchvision.models import mobilenet_v2

    for w in MBV2_WIDTHS:
        with torch.device("meta"):  # shapes only: skip the weight initialisation
            model = mobilenet_v2(width_mult=w)
        spec = mobilenetv2(w)
        assert spec.stem_out == model.features[0][0].out_channels
        outs = [blk.out_channels for blk in model.features[1:18]]
        assert [st.out for st in spec.stages for _ in st.ops] == outs, w
        assert spec.head_out == model.features[18][0].out_channels
        assert builtin_arch(f"mobilenetv2-{w}") == spec
    assert mobilenetv2(0.75).stem_out == 24 and mobilenetv2(1.4).head_out == 1792


def test_load_arch_from_file_stdin_and_names(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = builtin_arch("fna-ssdlite")
    p = tmp_path / "a.json"
    p.write_text(spec.to_json())
    assert load_arch(str(p)) == spec
    monkeypatch.setattr(sys, "stdin", io.StringIO(spec.to_json()))
    assert load_arch("-") == spec
    assert load_arch("mobilenetv2-0.75") == mobilenetv2(0.75)  # a name with a dot
    with pytest.raises(UserError, match="nope: unknown built-in architecture"):
        load_arch("nope")
    with pytest.raises(UserError, match="missing.json: no such file"):
        load_arch(str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="fna: unknown built-in architecture"):
        load_arch("fna")  # a space, not an architecture
    sp = tmp_path / "s.json"
    sp.write_text(builtin_space("fna").to_json())
    with pytest.raises(UserError, match=r"this is a search space .*fnacli derive"):
        load_arch(str(sp))
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "fnacli/arch@1",\n "stem": }')
    with pytest.raises(UserError, match=r"bad.json: not valid JSON \(.* at line 2 column"):
        load_arch(str(bad))


# -- precise messages -----------------------------------------------------------------------
def _mbv2() -> dict:
    return mobilenetv2().to_dict()


def _set(path: str, value: object):
    def change(d: dict) -> dict:
        d = copy.deepcopy(d)
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = d
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return d
    return change


@pytest.mark.parametrize(("change", "message"), [
    (_set("stages.2.stride", 3), "spec: stages[2].stride: expected 1 or 2, got 3"),
    (_set("stages.1.out", 0), "spec: stages[1].out: expected an integer ≥ 1, got 0"),
    (_set("stages.4.out", "96"), "spec: stages[4].out: expected an integer ≥ 1, got '96'"),
    (_set("stages.3.out", True), "spec: stages[3].out: expected an integer ≥ 1, got True"),
    (_set("stages.0.out", KeyError), "spec: stages[0]: missing field 'out'"),
    (_set("stages.1.ops.1", "k4_e6"), "spec: stages[1].ops[1]: kernel must be one of 3, 5, 7"),
    (_set("stages.1.ops.0", "k3_e0"), "spec: stages[1].ops[0]: expansion must be ≥ 1"),
    (_set("stages.5.ops.2", "3x3"), "spec: stages[5].ops[2]: expected an op like 'k3_e6'"),
    (_set("stages.3.ops.1", "skip"), "spec: stages[3].ops[1]: 'skip' is not allowed"),
    (_set("stages.6.ops", []), "spec: stages[6].ops: expected a non-empty list"),
    (_set("stages.2.kernel", 3), "spec: stages[2]: unknown field 'kernel'"),
    (_set("stages.2", [1, 2]), "spec: stages[2]: expected an object"),
    (_set("stem.stride", 4), "spec: stem.stride: expected 1 or 2, got 4"),
    (_set("stem", 32), "spec: missing or invalid 'stem'"),
    (_set("head", 1280), "spec: 'head' must be an object"),
    (_set("head.out", -1), "spec: head.out: expected an integer ≥ 1, got -1"),
    (_set("stages", []), "spec: stages: expected a non-empty list"),
    (_set("schema", "fnacli/arch@2"), "spec: schema must be 'fnacli/arch@1', got 'fnacli/arch@2'"),
    (_set("extra", 1), "spec: unknown field 'extra'"),
])
def test_malformed_arch_messages_name_stage_and_field(change: object, message: str) -> None:
    with pytest.raises(UserError) as e:
        ArchSpec.from_dict(change(_mbv2()), "spec")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_op_parse_and_str() -> None:
    assert Op.parse("k7_e3") == Op(7, 3) and str(Op(5, 6)) == "k5_e6"
    assert sorted([Op(7, 3), Op(3, 6), Op(3, 3)]) == [Op(3, 3), Op(3, 6), Op(7, 3)]


# -- spaces ---------------------------------------------------------------------------------
def _space(**stage: object) -> dict:
    s = {"out": 24, "stride": 2, "layers": 3, "ops": ["k3_e3", "k5_e6", "skip"], **stage}
    return {"schema": "fnacli/space@1", "stem": {"out": 16, "stride": 2},
            "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]}, s], "head": {"out": 64}}


@pytest.mark.parametrize(("out", "outs"), [
    ({"min": 16, "max": 28, "step": 2}, (16, 18, 20, 22, 24, 26, 28)),  # max inclusive
    ({"min": 16, "max": 27, "step": 4}, (16, 20, 24)),
    ([32, 24, 40], (24, 32, 40)),  # sorted ascending
    (48, (48,)),
])
def test_space_channel_candidates(out: object, outs: tuple) -> None:
    space = SpaceSpec.from_dict(_space(out=out))
    assert space.stages[1].outs == outs
    assert space.max_arch().stages[1].out == max(outs)
    assert SpaceSpec.from_dict(json.loads(space.to_json())) == space


@pytest.mark.parametrize(("stage", "message"), [
    ({"out": {"min": 30, "max": 20, "step": 2}}, "space: stages[1].out: max (20) is below min"),
    ({"out": [16, 16]}, "space: stages[1].out: duplicate channel candidates"),
    ({"out": {"min": 16, "max": 20}}, "space: stages[1].out: missing field 'step'"),
    ({"out": "wide"}, "space: stages[1].out: expected an integer, a list of integers"),
    ({"ops": ["skip"]}, "space: stages[1].ops: needs at least one candidate besides 'skip'"),
    ({"ops": ["k3_e3", "k3_e3"]}, "space: stages[1].ops[1]: duplicate candidate 'k3_e3'"),
    ({"ops": ["k9_e3"]}, "space: stages[1].ops[0]: kernel must be one of 3, 5, 7"),
    ({"layers": 0}, "space: stages[1].layers: expected an integer ≥ 1, got 0"),
])
def test_malformed_space_messages(stage: dict, message: str) -> None:
    with pytest.raises(UserError) as e:
        SpaceSpec.from_dict(_space(**stage), "space")
    assert str(e.value).startswith(message), str(e.value)


def test_space_layers_and_builtins() -> None:
    space = SpaceSpec.from_dict(_space())
    st = space.stages[1]
    assert st.layer_candidates(0) == ("k3_e3", "k5_e6")  # no skip for the first layer
    assert st.layer_candidates(1) == ("k3_e3", "k5_e6", "skip")
    assert space.stages[0].layer_candidates(0) == ("k3_e1",) and not space.stages[0].searchable
    fna = builtin_space("fna")
    assert [s.layers for s in fna.stages] == [1, 4, 4, 4, 4, 4, 1]
    assert [s.outs for s in fna.stages] == [(s.out,) for s in mobilenetv2().stages]
    assert "skip" not in fna.stages[6].candidates and len(fna.stages[1].candidates) == 7
    ch = builtin_space("fna-channels")
    assert [(s.outs[0], s.outs[-1], len(s.outs)) for s in ch.stages[1:]] == [
        (16, 28, 7), (28, 48, 11), (48, 72, 13), (72, 128, 15), (128, 256, 33), (256, 400, 37)]
    with pytest.raises(UserError, match="space: schema must be 'fnacli/space@1'"):
        SpaceSpec.from_dict(_mbv2(), "space")


# -- JSON Schemas ---------------------------------------------------------------------------
def _validate(instance: object, schema: dict, root: dict, where: str = "$") -> list[str]:
    """The JSON Schema keywords docs/schema uses (jsonschema is not a dependency)."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return _validate(instance, node, root, where)
    errs: list[str] = []
    types = {"object": dict, "array": list, "string": str, "integer": int}
    t = schema.get("type")
    if t and (not isinstance(instance, types[t]) or (t == "integer" and instance is True)
              or (t == "integer" and instance is False)):
        return [f"{where}: not {t}"]
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{where}: != const")
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{where}: not in enum")
    if "pattern" in schema and not re.search(schema["pattern"], instance):
        errs.append(f"{where}: pattern")
    if "minimum" in schema and instance < schema["minimum"]:
        errs.append(f"{where}: below minimum")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errs.append(f"{where}: too few items")
        if schema.get("uniqueItems") and len({json.dumps(i) for i in instance}) != len(instance):
            errs.append(f"{where}: items not unique")
        for i, item in enumerate(instance):
            errs += _validate(item, schema.get("items", {}), root, f"{where}[{i}]")
    if isinstance(instance, dict):
        errs += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in instance]
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errs += [f"{where}: extra {k}" for k in instance if k not in props]
        for k, sub in props.items():
            if k in instance:
                errs += _validate(instance[k], sub, root, f"{where}.{k}")
    if "oneOf" in schema:
        ok = sum(not _validate(instance, s, root, where) for s in schema["oneOf"])
        if ok != 1:
            errs.append(f"{where}: matches {ok} of oneOf")
    if "anyOf" in schema and all(_validate(instance, s, root, where) for s in schema["anyOf"]):
        errs.append(f"{where}: matches none of anyOf")
    return errs


def _schema_errors(instance: object, name: str) -> list[str]:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    try:
        import jsonschema  # used when present, for an independent check
    except ImportError:
        return _validate(instance, schema, schema)
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]


def test_builtins_validate_against_the_schemas() -> None:
    for name in builtin_arch_names():
        assert _schema_errors(builtin_arch(name).to_dict(), "arch.schema.json") == [], name
    for name in SPACES:
        assert _schema_errors(builtin_space(name).to_dict(), "space.schema.json") == [], name
    for out in ({"min": 16, "max": 28, "step": 2}, [24, 32], 40):
        assert _schema_errors(_space(out=out), "space.schema.json") == []


@pytest.mark.parametrize("change", [
    _set("stages.2.stride", 3), _set("stages.1.ops.1", "k4_e6"), _set("stages.0.out", KeyError),
    _set("stages.3.ops.1", "skip"), _set("head.out", 0), _set("extra", 1),
    _set("schema", "fnacli/space@1"), _set("stages", []),
])
def test_schema_rejects_what_the_parser_rejects(change: object) -> None:
    bad = change(_mbv2())
    assert _schema_errors(bad, "arch.schema.json")
    with pytest.raises(UserError):
        ArchSpec.from_dict(bad)


def test_space_schema_rejects_bad_spaces() -> None:
    assert _schema_errors(_space(out="wide"), "space.schema.json")
    assert _schema_errors(_space(ops=["k3_e3", "k3_e3"]), "space.schema.json")
    assert _schema_errors(_space(layers=0), "space.schema.json")
    assert _schema_errors(_space(out={"min": 1, "max": 2}), "space.schema.json")
