"""SVG pictures (`fnacli.plots`): the α/β plot's bars are the recorded probabilities, the
diagram's boxes are the spec's layers, files are written atomically, `derive --plot/--diagram`
refuse to overwrite, and a search redraws SEARCHED.arch.svg after every epoch."""

from __future__ import annotations

import json
import math
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from fnacli import plots
from fnacli.errors import UserError
from fnacli.nn.supernet import Supernet, op_choices, width_choices
from fnacli.search import arch as A
from fnacli.spec import ArchSpec, Op, SpaceSpec, Stage, mobilenetv2

NS = "{http://www.w3.org/2000/svg}"
# the elements plots.py may use, all SVG 1.1
SVG11 = {"svg", "title", "style", "g", "rect", "text", "line", "polyline", "circle"}
CANDS = ["k3_e3", "k5_e6", "k7_e3", "skip"]
SPACE = SpaceSpec.from_dict({
    "schema": "fnacli/space@1", "name": "small", "stem": {"out": 8, "stride": 2},
    "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
               {"out": [8, 12, 16], "stride": 2, "layers": 3, "ops": CANDS},
               {"out": 24, "stride": 2, "layers": 2, "ops": CANDS},
               {"out": [24, 32], "stride": 2, "layers": 1, "ops": ["k3_e6", "k5_e3"]}],
    "head": {"out": 48}})


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text.encode())
    assert root.tag == NS + "svg" and root.get("version") == "1.1"
    tags = {el.tag.removeprefix(NS) for el in root.iter()}
    assert tags <= SVG11, tags - SVG11
    ids = [el.get("id") for el in root.iter() if el.get("id")]
    assert len(ids) == len(set(ids))  # ids are unique, as XML requires
    return root


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {el.get("id"): el for el in root.iter() if el.get("id")}


def classes(el: ET.Element) -> set[str]:
    return set((el.get("class") or "").split())


def random_records(space: SpaceSpec, n: int, seed: int = 0) -> list[dict]:
    """Epoch records as the search writes them: normalised probabilities, 6 decimals."""
    rng = random.Random(seed)

    def dist(names: list[str]) -> dict[str, float]:
        w = [rng.random() ** 3 for _ in names]  # skewed, some near zero
        return {k: round(x / sum(w), 6) for k, x in zip(names, w, strict=True)}

    return [{"event": "epoch", "epoch": e, "step": 10 * (e + 1),
             "expected_madds": 5e6 - 3e5 * e + rng.random() * 1e5, "argmax_madds": 4e6 - 2e5 * e,
             "alpha": {f"{s}.{i}": dist(list(c)) for s, i, c in op_choices(space)},
             "beta": {str(s): dist([str(o) for o in outs]) for s, outs in width_choices(space)}}
            for e in range(n)]


def check_bars(root: ET.Element, records: list[dict], space: SpaceSpec) -> None:
    """Every (layer, epoch) and (stage, epoch) bar: one segment per candidate, heights equal to
    the recorded probabilities times BAR_H, stacked without gaps to BAR_H."""
    ids = by_id(root)
    rows = [(f"a-{s}-{i}", "alpha", f"{s}.{i}", list(c)) for s, i, c in op_choices(space)]
    rows += [(f"b-{s}", "beta", str(s), [str(o) for o in outs])
             for s, outs in width_choices(space)]
    for ident, kind, key, cands in rows:
        for j, rec in enumerate(records):
            bar = ids[f"{ident}-e{j}"]
            segs = [el for el in bar if el.tag == NS + "rect"]
            assert len(segs) == len(cands)
            assert [el.get("id") for el in segs] == [f"{ident}-e{j}-{c}" for c in cands]
            heights = [float(el.get("height")) for el in segs]
            for h, c in zip(heights, cands, strict=True):
                assert h / plots.BAR_H == pytest.approx(rec[kind][key][c], abs=1e-4)
            assert sum(heights) == pytest.approx(plots.BAR_H, abs=2e-3)
            # stacked: each segment starts where the one below it ends
            ys = [float(el.get("y")) for el in segs]
            for k in range(1, len(segs)):
                assert ys[k] + heights[k] == pytest.approx(ys[k - 1], abs=2e-3)


def test_search_plot_has_one_bar_per_layer_and_epoch_with_the_probabilities() -> None:
    recs = random_records(SPACE, 5)
    text = plots.render_search_plot(SPACE, recs, title="t", warmup_epochs=2)
    root = parse(text)
    n_alpha = len(op_choices(SPACE))  # 3 + 2 + 1 layers
    n_beta = len(width_choices(SPACE))  # stages 1 and 3
    bars = [el for el in root.iter(NS + "g") if "bar" in classes(el)]
    assert len(bars) == (n_alpha + n_beta) * 5
    segs = [el for el in root.iter(NS + "rect") if "seg" in classes(el)]
    want = sum(len(c) for *_, c in op_choices(SPACE)) + sum(len(o) for _, o in width_choices(SPACE))
    assert len(segs) == want * 5
    check_bars(root, recs, SPACE)
    # legend: every candidate op once (skip included), each its own colour
    swatches = [el for el in root.iter(NS + "rect") if "swatch" in classes(el)]
    assert sorted(el.get("id").removeprefix("legend-") for el in swatches) == sorted(
        {*CANDS, "k3_e6", "k5_e3"})
    fills = [el.get("fill") for el in swatches]
    assert len(set(fills)) == len(fills)
    seg_fill = {el.get("id").rsplit("-", 1)[1]: el.get("fill") for el in segs
                if el.get("id").startswith("a-")}
    assert all(seg_fill[el.get("id").removeprefix("legend-")] == el.get("fill") for el in swatches)
    # the right-hand label of a row is the last epoch's argmax
    texts = [el.text for el in root.iter(NS + "text")]
    last = recs[-1]["alpha"]["1.0"]
    assert f"→ {max(last, key=last.get)}" in texts
    # MAdds lines: one point per epoch, higher MAdds drawn higher (smaller y)
    ids = by_id(root)
    for key, line in (("expected_madds", "line-expected"), ("argmax_madds", "line-argmax")):
        pts = [tuple(map(float, p.split(","))) for p in ids[line].get("points").split()]
        assert len(pts) == 5
        vals = [r[key] for r in recs]
        for a in range(5):
            for b in range(5):
                if vals[a] > vals[b]:
                    assert pts[a][1] < pts[b][1]
    # the warm-up boundary sits between epoch 2 and epoch 3 (0-based 1 and 2)
    (warm,) = [el for el in root.iter(NS + "line") if "warm" in classes(el)]
    x3 = float(ids["a-1-0-e2"][0].get("x"))
    x2 = float(ids["a-1-0-e1"][0].get("x"))
    assert x2 < float(warm.get("x1")) < x3


def test_one_record_without_madds_and_no_channel_search() -> None:
    space = SpaceSpec.from_dict({**SPACE.to_dict(), "stages": [
        {"out": 8, "stride": 1, "ops": ["k3_e1"]},
        {"out": 16, "stride": 2, "layers": 2, "ops": ["k3_e6", "skip"]}]})
    rec = {"epoch": None, "alpha": {"1.0": {"k3_e6": 1.0}, "1.1": {"k3_e6": 0.25, "skip": 0.75}},
           "beta": {}}
    root = parse(plots.render_search_plot(space, [rec], title="now"))
    check_bars(root, [rec], space)
    assert not list(root.iter(NS + "polyline"))
    assert "now" in [el.text for el in root.iter(NS + "text")]  # a column without an epoch


def write_metrics(path: Path, records: list[dict]) -> Path:
    lines = [json.dumps({"event": "train", "epoch": 0, "step": 1, "loss": 3.0})]
    for r in records:
        lines.append(json.dumps({"event": "arch_step", "epoch": r["epoch"], "step": r["step"]}))
        lines.append(json.dumps(r))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_epoch_records(tmp_path: Path) -> None:
    recs = random_records(SPACE, 3)
    path = write_metrics(tmp_path / "m.jsonl", recs)
    assert plots.read_epoch_records(path, SPACE) == recs
    # a repeated epoch (later line wins) and a line cut by a crash
    again = {**recs[1], "expected_madds": 1.0}
    with path.open("a") as f:
        f.write(json.dumps(again) + "\n" + json.dumps(recs[2])[:40])
    assert plots.read_epoch_records(path, SPACE) == [recs[0], again, recs[2]]
    # records of another space are refused, naming the file and the line
    other = random_records(SPACE, 1)[0]
    other["alpha"]["1.0"] = {"k3_e3": 0.5, "k5_e6": 0.5}
    bad = write_metrics(tmp_path / "bad.jsonl", [other])
    with pytest.raises(UserError, match=r"bad\.jsonl: line 3: α of stage 1 layer 0"):
        plots.read_epoch_records(bad, SPACE)
    other = {**recs[0], "beta": {"1": recs[0]["beta"]["1"]}}
    with pytest.raises(UserError, match="'beta'"):
        plots.read_epoch_records(write_metrics(tmp_path / "b2.jsonl", [other]), SPACE)


def spec(stem: int, stages: list[tuple[int, int, list[str]]], head: int | None) -> ArchSpec:
    return ArchSpec(stem, 2, tuple(Stage(o, s, tuple(Op.parse(x) for x in ops))
                                   for o, s, ops in stages), head)


def test_diagram_boxes_labels_and_differences() -> None:
    seed = mobilenetv2(0.5)
    derived = spec(16, [(8, 1, ["k3_e1"]), (16, 2, ["k5_e6", "k3_e6", "k3_e3"]),
                        (16, 2, ["k3_e6", "k7_e3"]), (32, 2, ["k3_e6"] * 4),
                        (56, 1, ["k3_e6"]), (80, 2, ["k5_e6", "k3_e6", "k5_e6"]),
                        (160, 1, ["k3_e6"])], 1280)
    root = parse(plots.render_arch_diagram(derived, seed))
    blocks = [el for el in root.iter(NS + "g") if "layer" in classes(el)]
    for prefix, arch in (("d", derived), ("s", seed)):
        mine = [el for el in blocks if el.get("id").startswith(f"{prefix}-")]
        assert len(mine) == len(arch.layers())
        ids = [f"{prefix}-layer-{s}-{i}" for s, i, *_ in arch.layers()]
        assert [el.get("id") for el in mine] == ids  # drawn in network order
        labels = [next(t.text for t in el.iter(NS + "text") if "op" in classes(t)) for el in mine]
        assert labels == [f"K{op.kernel}E{op.expand}" for *_, op, _ in arch.layers()]
        chans = [next(t.text for t in el.iter(NS + "text") if "ch" in classes(t)) for el in mine]
        assert chans == [str(cout) for _, _, _, cout, _, _ in arch.layers()]
    # box widths grow with channels
    ids = by_id(root)
    w = {k: float(ids[k][1].get("width")) for k in ("d-layer-1-0", "d-layer-3-0", "d-layer-6-0")}
    assert w["d-layer-1-0"] < w["d-layer-3-0"] < w["d-layer-6-0"]
    # marks, computed independently: changed op / added layer on the derived side, dropped
    # layers on the seed side, widths that differ
    want_changed, want_added, want_dropped = set(), set(), set()
    for s, (a, b) in enumerate(zip(derived.stages, seed.stages, strict=True)):
        for i in range(max(a.depth, b.depth)):
            if i >= b.depth:
                want_added.add(f"d-layer-{s}-{i}")
            elif i >= a.depth:
                want_dropped.add(f"s-layer-{s}-{i}")
            elif a.ops[i] != b.ops[i]:
                want_changed.add(f"d-layer-{s}-{i}")

    def marked(cls: str) -> set[str]:
        return {el.get("id") for el in blocks if cls in classes(el[1])}

    assert marked("changed") == want_changed == {"d-layer-1-0", "d-layer-2-1", "d-layer-5-0",
                                                 "d-layer-5-2"}
    assert marked("added") == want_added == {"d-layer-1-2"}
    assert marked("dropped") == want_dropped == {"s-layer-2-2", "s-layer-4-1", "s-layer-4-2"}
    diff = {el.get("id") for el in blocks
            if any("diff" in classes(t) for t in el.iter(NS + "text"))}
    assert diff == {f"d-layer-{s}-{i}" for s, i, _, cout, _, _ in derived.layers()
                    if cout != seed.stages[s].out} == {"d-layer-4-0"}
    # a dashed separator and the stride per stage, stem and head boxes in both columns
    assert len([el for el in root.iter(NS + "line") if "sep" in classes(el)]) == 8
    texts = [el.text for el in root.iter(NS + "text")]
    for s, (st, total) in enumerate(zip(derived.stages, derived.stage_strides(), strict=True)):
        assert f"stage {s}" in texts and f"stride {st.stride} · /{total}" in texts
    assert {"d-stem", "s-stem", "d-head", "s-head"} <= set(ids)


def test_diagram_alone_has_no_seed_column() -> None:
    arch = mobilenetv2(0.35)
    root = parse(plots.render_arch_diagram(arch))
    assert not [el for el in root.iter() if (el.get("id") or "").startswith("s-")]
    assert not [el for el in root.iter() if classes(el) & {"changed", "added", "dropped"}]


def test_write_svg_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.svg"
    plots.write_svg(path, "<svg/>\n")
    assert path.read_text() == "<svg/>\n"

    def broken(src: str, dst: str) -> None:
        assert Path(src).read_text(encoding="utf-8") == "<svg>é</svg>\n"  # fully written first
        raise OSError("disk full")

    monkeypatch.setattr("fnacli.io.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.write_svg(path, "<svg>é</svg>\n")
    assert path.read_text() == "<svg/>\n"  # the old picture is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.svg"]  # no temp file left


# -- `fnacli derive --plot/--diagram` ------------------------------------------------------------
def searched(tmp_path: Path, seed: ArchSpec | None = None) -> tuple[Path, dict, dict]:
    """A searched checkpoint of SPACE with random α/β (zero weights)."""
    from fnacli.checkpoint import save_checkpoint

    g = torch.Generator().manual_seed(1)
    alpha = {(s, i): torch.randn(len(c), generator=g) for s, i, c in op_choices(SPACE)}
    beta = {s: torch.randn(len(o), generator=g) for s, o in width_choices(SPACE)}
    with torch.device("meta"):
        shapes = Supernet(SPACE).state_dict()
    tensors = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
    tensors.update(A.to_tensors(alpha, beta))
    meta = {"space": SPACE.to_dict(), "masks": "non-overlapping",
            "search": {"strategy": "differentiable", "task": "ssdlite", "size": [64, 64],
                       "warmup_epochs": 1, "epochs_done": 4}}
    if seed is not None:
        meta["seed_spec"] = seed.to_dict()
    path = tmp_path / "searched.safetensors"
    save_checkpoint(path, tensors, "searched", meta)
    return path, alpha, beta


def test_derive_plot_from_metrics_and_from_the_checkpoint(tmp_path: Path, run_cli) -> None:
    ck, alpha, beta = searched(tmp_path)
    # no metrics file: one column, the checkpoint's softmax(α), softmax(β)
    code, out, err = run_cli(["derive", ck, "--plot", tmp_path / "now.svg"])
    assert code == 0, err
    assert json.loads(out)["schema"] == "fnacli/arch@1"  # the spec still goes to stdout
    assert "no metrics file" in err
    a_p, b_p = A.probs(SPACE, alpha, beta)
    rec = {"alpha": {f"{s}.{i}": dict(zip(c, a_p[(s, i)].tolist(), strict=True))
                     for s, i, c in op_choices(SPACE)},
           "beta": {str(s): dict(zip(map(str, o), b_p[s].tolist(), strict=True))
                    for s, o in width_choices(SPACE)}}
    root = parse((tmp_path / "now.svg").read_text(encoding="utf-8"))
    check_bars(root, [rec], SPACE)
    assert len([el for el in root.iter(NS + "g") if "bar" in classes(el)]) == 6 + 2
    assert "4" in [el.text for el in root.iter(NS + "text")]  # epochs_done labels the column
    # SEARCHED.metrics.jsonl beside it: every epoch
    recs = random_records(SPACE, 4, seed=2)
    write_metrics(Path(f"{ck}.metrics.jsonl"), recs)
    code, _, err = run_cli(["derive", ck, "--plot", tmp_path / "all.svg"])
    assert code == 0, err
    root = parse((tmp_path / "all.svg").read_text(encoding="utf-8"))
    check_bars(root, recs, SPACE)
    assert len([el for el in root.iter(NS + "g") if "bar" in classes(el)]) == 8 * 4
    # --metrics names another file; one of another space is refused with its name
    other = random_records(SPACE, 1)[0]
    del other["alpha"]["2.1"]
    bad = write_metrics(tmp_path / "other.jsonl", [other])
    code, out, err = run_cli(["derive", ck, "--plot", tmp_path / "x.svg", "--metrics", bad])
    assert code == 2 and "other.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "x.svg").exists()
    code, _, err = run_cli(["derive", ck, "--plot", tmp_path / "x.svg", "--metrics",
                            tmp_path / "none.jsonl"])
    assert code == 2 and "none.jsonl" in err
    code, _, err = run_cli(["derive", ck, "--plot", "-"])
    assert code == 2 and "--plot" in err


def test_derive_diagram_and_refusing_to_overwrite(tmp_path: Path, run_cli) -> None:
    seed = spec(8, [(8, 1, ["k3_e1"]), (16, 2, ["k3_e6"] * 3), (24, 2, ["k3_e6"] * 2),
                    (32, 2, ["k3_e6"])], 48)
    ck, alpha, beta = searched(tmp_path, seed)
    dest = tmp_path / "d.svg"
    code, out, err = run_cli(["derive", ck, "--diagram", dest])
    assert code == 0, err
    arch = ArchSpec.from_dict(json.loads(out))
    assert arch == A.derive(SPACE, alpha, beta)[0]
    root = parse(dest.read_text(encoding="utf-8"))
    for prefix, want in (("d", arch), ("s", seed)):
        boxes = [el for el in root.iter(NS + "g") if "layer" in classes(el)
                 and el.get("id").startswith(prefix + "-")]
        labels = [next(t.text for t in el.iter(NS + "text") if "op" in classes(t))
                  for el in boxes]
        assert labels == [plots.op_label(op) for *_, op, _ in want.layers()]
    # an existing picture is kept without --force (exit 2, nothing on stdout), replaced with it
    before = dest.read_bytes()
    for opt in ("--diagram", "--plot"):
        code, out, err = run_cli(["derive", ck, opt, dest])
        assert code == 2 and "--force" in err and out == ""
        assert dest.read_bytes() == before
    code, _, err = run_cli(["derive", ck, "--plot", dest, "--force"])
    assert code == 0, err
    assert dest.read_bytes() != before and "a-1-0-e0" in by_id(parse(dest.read_text("utf-8")))


# -- the search draws SEARCHED.arch.svg after every epoch ----------------------------------------
TINY = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
        "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                   {"out": [8, 12], "stride": 2, "layers": 2, "ops": ["k3_e3", "skip"]},
                   {"out": 16, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 24, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 32, "stride": 1, "ops": ["k3_e6"]},
                   {"out": 48, "stride": 2, "layers": 1, "ops": ["k3_e6", "k5_e6"]},
                   {"out": 96, "stride": 1, "ops": ["k3_e6"]}],
        "head": {"out": 128}}


@pytest.mark.slow
def test_search_redraws_its_plot_every_epoch(tmp_path: Path, run_cli,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import torchvision_seed

    from fnacli.checkpoint import save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.search.supernet_io import expand

    monkeypatch.setenv("FNACLI_CACHE_DIR", str(tmp_path / "cache"))
    generate(tmp_path / "data", SynthConfig(train=16, val=2, size=64, classes=2, seed=0))
    torch.save(torchvision_seed(0.35).state_dict(), tmp_path / "seed.pth")
    space = SpaceSpec.from_dict(TINY)
    tensors, meta = expand(str(tmp_path / "seed.pth"), space, "non-overlapping", 0)
    save_checkpoint(tmp_path / "super.safetensors", tensors, "supernet", meta)
    out = tmp_path / "s.safetensors"
    run = ["search", tmp_path / "super.safetensors", "--data", tmp_path / "data", "-o", out,
           "--task", "ssdlite", "--size", "64", "--epochs", "2", "--warmup-epochs", "1",
           "--batch-size", "4", "--arch-every", "1", "--arch-lr", "0.1", "--workers", "0",
           "--device", "cpu", "--seed", "0"]
    svg = plots.search_plot_path(out)
    assert svg == tmp_path / "s.safetensors.arch.svg"
    code, _, err = run_cli([*run, "--stop-after", "2"])  # 2 steps = the first epoch
    assert code == 0, err
    root = parse(svg.read_text(encoding="utf-8"))
    recs = plots.read_epoch_records(f"{out}.metrics.jsonl", space)
    assert [r["epoch"] for r in recs] == [0]
    check_bars(root, recs, space)
    assert len([el for el in root.iter(NS + "g") if "bar" in classes(el)]) == (2 + 1 + 1) * 1
    code, _, err = run_cli([*run, "--resume"])
    assert code == 0, err
    root = parse(svg.read_text(encoding="utf-8"))
    recs = plots.read_epoch_records(f"{out}.metrics.jsonl", space)
    assert [r["epoch"] for r in recs] == [0, 1]
    check_bars(root, recs, space)
    assert len([el for el in root.iter(NS + "g") if "bar" in classes(el)]) == 4 * 2
    assert len(by_id(root)["line-expected"].get("points").split()) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # derive --plot redraws the same bars from the metrics file
    code, _, err = run_cli(["derive", out, "--plot", tmp_path / "again.svg"])
    assert code == 0, err
    again = parse((tmp_path / "again.svg").read_text(encoding="utf-8"))
    segs = {el.get("id"): el.get("height") for el in root.iter(NS + "rect") if el.get("id")}
    assert segs == {el.get("id"): el.get("height") for el in again.iter(NS + "rect")
                    if el.get("id")}
    assert math.isfinite(recs[-1]["expected_madds"])
