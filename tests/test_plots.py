"""The pictures (fnacli.plots, matplotlib): the search plot has one panel per searchable layer
with each candidate's probability over the epochs on a 0-1 axis, β the same (lines or a
heatmap), MAdds with labelled axes; the diagram's boxes, labels and marks; one colour per op in
every picture; SVG and PNG files that open; `derive --plot/--diagram` and the search's plot."""

from __future__ import annotations

import json
import math
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from fnacli import plots  # noqa: E402
from fnacli.errors import UserError  # noqa: E402
from fnacli.nn.supernet import Supernet, op_choices, width_choices  # noqa: E402
from fnacli.search import arch as A  # noqa: E402
from fnacli.spec import ArchSpec, Op, SpaceSpec, Stage, mobilenetv2  # noqa: E402

NS = "{http://www.w3.org/2000/svg}"
CANDS = ["k3_e3", "k5_e6", "k7_e3", "skip"]
SPACE = SpaceSpec.from_dict({
    "schema": "fnacli/space@1", "name": "small", "stem": {"out": 8, "stride": 2},
    "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
               {"out": [8, 12, 16], "stride": 2, "layers": 3, "ops": CANDS},
               {"out": 24, "stride": 2, "layers": 2, "ops": CANDS},
               {"out": [24, 32], "stride": 2, "layers": 1, "ops": ["k3_e6", "k5_e3"]}],
    "head": {"out": 48}})


def random_records(space: SpaceSpec, n: int, seed: int = 0) -> list[dict]:
    """Epoch records as the search writes them: epochs from 1, normalised probabilities."""
    rng = random.Random(seed)

    def dist(names: list[str]) -> dict[str, float]:
        w = [rng.random() ** 3 for _ in names]  # skewed, some near zero
        return {k: round(x / sum(w), 6) for k, x in zip(names, w, strict=True)}

    return [{"event": "epoch", "epoch": e, "step": 10 * e,
             "expected_madds": 5e6 - 3e5 * e + rng.random() * 1e5, "argmax_madds": 4e6 - 2e5 * e,
             "alpha": {f"{s}.{i}": dist(list(c)) for s, i, c in op_choices(space)},
             "beta": {str(s): dist([str(o) for o in outs]) for s, outs in width_choices(space)}}
            for e in range(1, n + 1)]


def panels(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}


def lines(ax) -> dict:
    return {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}


def check_panels(fig, records: list[dict], space: SpaceSpec) -> None:
    """A panel per searchable layer and per channel-searched stage; in it a line per
    candidate whose points are the recorded probabilities at the recorded epochs, on 0-1."""
    got = panels(fig)
    want = {f"a-{s}-{i}" for s, i, _ in op_choices(space)}
    want |= {f"b-{s}" for s, _ in width_choices(space)}
    assert want <= set(got), (want, set(got))
    epochs = [r["epoch"] for r in records]
    for s, i, cands in op_choices(space):
        ax = got[f"a-{s}-{i}"]
        lo, hi = ax.get_ylim()
        assert lo <= 0 and hi >= 1 and ax.get_ylim() == pytest.approx((-0.04, 1.04))
        ls = lines(ax)
        assert set(ls) == {f"a-{s}-{i}-{c}" for c in cands}
        for c in cands:
            ln = ls[f"a-{s}-{i}-{c}"]
            assert list(ln.get_ydata()) == pytest.approx([r["alpha"][f"{s}.{i}"][c]
                                                          for r in records], abs=1e-6)
            if all(isinstance(e, int) for e in epochs):
                assert list(ln.get_xdata()) == epochs
            assert ln.get_color() == plots.op_colour(c)
        last = records[-1]["alpha"][f"{s}.{i}"]
        assert ax.get_title(loc="left") == f"stage {s} layer {i} → {max(last, key=last.get)}"
        assert ax.get_xlabel() == "epoch"
    for s, outs in width_choices(space):
        ax = got[f"b-{s}"]
        ls = lines(ax)
        if ls:
            assert set(ls) == {f"b-{s}-{w}" for w in outs}
            for w in outs:
                assert list(ls[f"b-{s}-{w}"].get_ydata()) == pytest.approx(
                    [r["beta"][str(s)][str(w)] for r in records], abs=1e-6)
        else:  # many widths: a heatmap on a fixed 0-1 colour scale
            (image,) = ax.get_images()
            assert image.get_clim() == (0.0, 1.0)
            want = [[r["beta"][str(s)][str(w)] for r in records] for w in outs]
            assert [x for row in image.get_array().tolist() for x in row] == pytest.approx(
                [x for row in want for x in row], abs=1e-6)


def test_search_figure_panels_lines_and_madds() -> None:
    recs = random_records(SPACE, 5)
    fig = plots.search_figure(SPACE, recs, title="t", warmup_epochs=2)
    check_panels(fig, recs, SPACE)
    got = panels(fig)
    assert set(got) == {"a-1-0", "a-1-1", "a-1-2", "a-2-0", "a-2-1", "a-3-0", "b-1", "b-3",
                        "madds"}
    ax = got["madds"]
    assert ax.get_xlabel() == "epoch" and "MAdds" in ax.get_ylabel()
    for key, gid in (("expected_madds", "madds-expected"), ("argmax_madds", "madds-argmax")):
        ln = lines(ax)[gid]
        assert list(ln.get_xdata()) == [1, 2, 3, 4, 5]
        assert list(ln.get_ydata()) == pytest.approx([r[key] / 1e6 for r in recs])
    # the warm-up (epochs 1-2) is shaded up to the boundary between epoch 2 and 3
    (span,) = [p for p in got["a-1-0"].patches]
    x0, x1 = span.get_x(), span.get_x() + span.get_width()
    assert x0 == pytest.approx(0.5) and x1 == pytest.approx(2.5)
    # the legend names every candidate op once, each in its own colour
    (legend,) = fig.legends
    names = [t.get_text() for t in legend.get_texts()]
    assert sorted(n for n in names if "warm-up" not in n) == sorted({*CANDS, "k3_e6", "k5_e3"})
    colours = {plots.op_colour(n) for n in names if "warm-up" not in n}
    assert len(colours) == len(names) - 1


def test_many_width_candidates_are_a_heatmap_and_one_record_has_a_now_column() -> None:
    space = SpaceSpec.from_dict({**SPACE.to_dict(), "stages": [
        {"out": 8, "stride": 1, "ops": ["k3_e1"]},
        {"out": list(range(8, 40, 4)), "stride": 2, "layers": 2, "ops": ["k3_e6", "skip"]}]})
    recs = random_records(space, 3)
    fig = plots.search_figure(space, recs, title="many")
    check_panels(fig, recs, space)
    assert not lines(panels(fig)["b-1"])
    assert any("P(width)" in a.get_ylabel() for a in fig.axes)  # the colour bar's label
    # one record without an epoch (a checkpoint's current α/β) and without MAdds
    rec = {"epoch": None, "alpha": {"1.0": {"k3_e6": 1.0}, "1.1": {"k3_e6": 0.25, "skip": 0.75}},
           "beta": recs[0]["beta"]}
    fig = plots.search_figure(space, [rec], title="now")
    check_panels(fig, [rec], space)
    assert "madds" not in panels(fig)
    assert [t.get_text() for t in panels(fig)["a-1-1"].get_xticklabels()] == ["now"]


def test_picture_files_open_and_are_reproducible(tmp_path: Path) -> None:
    from PIL import Image

    fig = plots.search_figure(SPACE, random_records(SPACE, 4), title="files", warmup_epochs=1)
    svg = plots.save_figure(fig, tmp_path / "p.svg")
    png = plots.save_figure(fig, tmp_path / "p.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 600
        assert len(set(im.convert("L").getdata())) > 10  # not blank
    root = ET.fromstring(svg.read_bytes())
    assert root.tag == NS + "svg"
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    assert {"a-1-0", "a-1-0-k3_e3", "b-1-12", "madds", "madds-expected"} <= ids
    texts = " ".join(el.text or "" for el in root.iter(NS + "text"))
    assert "stage 1 layer 0" in texts and "MAdds (millions)" in texts and "epoch" in texts
    # the same records give the same bytes (no dates in the files, fixed SVG ids)
    fig = plots.search_figure(SPACE, random_records(SPACE, 4), title="files", warmup_epochs=1)
    assert plots.save_figure(fig, tmp_path / "q.svg").read_bytes() == svg.read_bytes()
    assert plots.save_figure(fig, tmp_path / "q.png").read_bytes() == png.read_bytes()
    with pytest.raises(UserError, match=r"\.svg, \.png or \.pdf"):
        plots.save_figure(fig, tmp_path / "p.jpg")


def test_save_figure_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.png"
    fig = plots.diagram_figure(mobilenetv2(0.35))
    plots.save_figure(fig, path)
    before = path.read_bytes()

    def broken(src: str, dst: str) -> None:
        assert Path(src).stat().st_size > 0  # fully written first
        raise OSError("disk full")

    monkeypatch.setattr("fnacli.io.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(plots.diagram_figure(mobilenetv2(1.0)), path)
    assert path.read_bytes() == before  # the old picture is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]  # no temp file left


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


def boxes(fig) -> dict:
    (ax,) = fig.axes
    return {p.get_gid(): p for p in ax.patches if p.get_gid()}


def texts(fig) -> dict:
    (ax,) = fig.axes
    return {t.get_gid(): t for t in ax.texts if t.get_gid()}


def test_diagram_boxes_labels_and_differences() -> None:
    seed = mobilenetv2(0.5)
    derived = spec(16, [(8, 1, ["k3_e1"]), (16, 2, ["k5_e6", "k3_e6", "k3_e3"]),
                        (16, 2, ["k3_e6", "k7_e3"]), (32, 2, ["k3_e6"] * 4),
                        (56, 1, ["k3_e6"]), (80, 2, ["k5_e6", "k3_e6", "k5_e6"]),
                        (160, 1, ["k3_e6"])], 1280)
    fig = plots.diagram_figure(derived, seed)
    bx, tx = boxes(fig), texts(fig)
    for prefix, arch in (("d", derived), ("s", seed)):
        ids = [f"{prefix}-layer-{s}-{i}" for s, i, *_ in arch.layers()]
        assert [k for k in bx if k.startswith(f"{prefix}-layer")] == ids  # in network order
        assert [tx[f"{k}-op"].get_text() for k in ids] == [
            f"k{op.kernel}_e{op.expand}" for *_, op, _ in arch.layers()]
        assert [tx[f"{k}-ch"].get_text() for k in ids] == [
            str(cout) for _, _, _, cout, _, _ in arch.layers()]
        # one colour per op, the same as the search plot's
        for k, (*_, op, _) in zip(ids, arch.layers(), strict=True):
            assert bx[k].get_facecolor()[:3] == pytest.approx(
                tuple(int(plots.op_colour(op)[j:j + 2], 16) / 255 for j in (1, 3, 5)))
    # box widths grow with channels
    w = {k: bx[k].get_width() for k in ("d-layer-1-0", "d-layer-3-0", "d-layer-6-0")}
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
    marks = plots.diagram_marks(derived, seed)
    assert marks["changed"] == want_changed == {"d-layer-1-0", "d-layer-2-1", "d-layer-5-0",
                                                "d-layer-5-2"}
    assert marks["added"] == want_added == {"d-layer-1-2"}
    assert marks["dropped"] == want_dropped == {"s-layer-2-2", "s-layer-4-1", "s-layer-4-2"}
    red = tuple(int(plots.ARGMAX_COLOUR[j:j + 2], 16) / 255 for j in (1, 3, 5))
    outlined = {k for k, p in bx.items() if k[1:].startswith("-layer")
                and p.get_edgecolor()[:3] == pytest.approx(red)}
    assert outlined == want_changed | want_added | want_dropped
    dashed = {k for k in outlined if bx[k].get_linestyle() not in ("-", "solid")}
    assert dashed == want_added | want_dropped
    diff = {k.removesuffix("-ch") for k, t in tx.items() if k.endswith("-ch")
            and k.startswith("d-layer") and t.get_color() == plots.ARGMAX_COLOUR}
    assert diff == {f"d-layer-{s}-{i}" for s, i, _, cout, _, _ in derived.layers()
                    if cout != seed.stages[s].out} == {"d-layer-4-0"}
    # a dashed separator per stage and before the head; the stride per stage
    (ax,) = fig.axes
    seps = [ln.get_gid() for ln in ax.get_lines() if (ln.get_gid() or "").startswith("sep-")]
    assert seps == [f"sep-{s}" for s in range(7)] + ["sep-head"]
    all_text = [t.get_text() for t in ax.texts]
    for s, (st, total) in enumerate(zip(derived.stages, derived.stage_strides(), strict=True)):
        assert f"stage {s}" in all_text and f"stride {st.stride} · /{total}" in all_text
    assert {"d-stem", "s-stem", "d-head", "s-head"} <= set(bx)


def test_diagram_alone_has_no_seed_column() -> None:
    bx = boxes(plots.diagram_figure(mobilenetv2(0.35)))
    assert bx and not [k for k in bx if k.startswith(("s-", "legend-"))]


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


def capture(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every figure fnacli.plots.save_figure writes (and still write it)."""
    seen: list = []
    real = plots.save_figure

    def spy(fig, path):
        seen.append((fig, Path(path)))
        return real(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    return seen


def test_derive_plot_from_metrics_and_from_the_checkpoint(tmp_path: Path, run_cli,
                                                         monkeypatch) -> None:
    seen = capture(monkeypatch)
    ck, alpha, beta = searched(tmp_path)
    # no metrics file: one column, the checkpoint's softmax(α), softmax(β), at epoch 4
    code, out, err = run_cli(["derive", ck, "--plot", tmp_path / "now.png"])
    assert code == 0, err
    assert json.loads(out)["schema"] == "fnacli/arch@1"  # the spec still goes to stdout
    assert "no metrics file" in err
    a_p, b_p = A.probs(SPACE, alpha, beta)
    rec = {"epoch": 4,
           "alpha": {f"{s}.{i}": dict(zip(c, a_p[(s, i)].tolist(), strict=True))
                     for s, i, c in op_choices(SPACE)},
           "beta": {str(s): dict(zip(map(str, o), b_p[s].tolist(), strict=True))
                    for s, o in width_choices(SPACE)}}
    (fig, path), = seen
    assert path == tmp_path / "now.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_panels(fig, [rec], SPACE)
    # SEARCHED.metrics.jsonl beside it: every epoch
    recs = random_records(SPACE, 4, seed=2)
    write_metrics(Path(f"{ck}.metrics.jsonl"), recs)
    code, _, err = run_cli(["derive", ck, "--plot", tmp_path / "all.svg"])
    assert code == 0, err
    check_panels(seen[-1][0], recs, SPACE)
    ET.fromstring((tmp_path / "all.svg").read_bytes())
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
    code, _, err = run_cli(["derive", ck, "--plot", tmp_path / "x.gif"])
    assert code == 2 and ".png" in err and not (tmp_path / "x.gif").exists()


def test_derive_diagram_and_refusing_to_overwrite(tmp_path: Path, run_cli, monkeypatch) -> None:
    seen = capture(monkeypatch)
    seed = spec(8, [(8, 1, ["k3_e1"]), (16, 2, ["k3_e6"] * 3), (24, 2, ["k3_e6"] * 2),
                    (32, 2, ["k3_e6"])], 48)
    ck, alpha, beta = searched(tmp_path, seed)
    dest = tmp_path / "d.svg"
    code, out, err = run_cli(["derive", ck, "--diagram", dest])
    assert code == 0, err
    arch = ArchSpec.from_dict(json.loads(out))
    assert arch == A.derive(SPACE, alpha, beta)[0]
    tx = texts(seen[-1][0])
    for prefix, want in (("d", arch), ("s", seed)):
        ids = [f"{prefix}-layer-{s}-{i}" for s, i, *_ in want.layers()]
        assert [tx[f"{k}-op"].get_text() for k in ids] == [
            plots.op_label(op) for *_, op, _ in want.layers()]
    ET.fromstring(dest.read_bytes())
    # an existing picture is kept without --force (exit 2, nothing on stdout), replaced with it
    before = dest.read_bytes()
    for opt in ("--diagram", "--plot"):
        code, out, err = run_cli(["derive", ck, opt, dest])
        assert code == 2 and "--force" in err and out == ""
        assert dest.read_bytes() == before
    code, _, err = run_cli(["derive", ck, "--plot", dest, "--force"])
    assert code == 0, err
    assert dest.read_bytes() != before and "a-1-0" in panels(seen[-1][0])


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
    from PIL import Image

    from fnacli.checkpoint import save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.search.supernet_io import expand

    seen = capture(monkeypatch)
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
    svg, png = plots.search_plot_path(out), plots.search_plot_path(out, ".png")
    assert svg == tmp_path / "s.safetensors.arch.svg" and png.name == "s.safetensors.arch.png"
    code, _, err = run_cli([*run, "--stop-after", "2"])  # 2 steps = the first epoch
    assert code == 0, err
    assert [p for _, p in seen] == [svg, png]
    recs = plots.read_epoch_records(f"{out}.metrics.jsonl", space)
    assert [r["epoch"] for r in recs] == [1]
    check_panels(seen[-1][0], recs, space)
    code, _, err = run_cli([*run, "--resume"])
    assert code == 0, err
    recs = plots.read_epoch_records(f"{out}.metrics.jsonl", space)
    assert [r["epoch"] for r in recs] == [1, 2]
    fig = seen[-1][0]
    check_panels(fig, recs, space)
    assert list(lines(panels(fig)["madds"])["madds-expected"].get_xdata()) == [1, 2]
    ET.fromstring(svg.read_bytes())
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # derive --plot redraws the same lines from the metrics file
    code, _, err = run_cli(["derive", out, "--plot", tmp_path / "again.svg"])
    assert code == 0, err
    again = seen[-1][0]
    for gid, ax in panels(fig).items():
        for name, ln in lines(ax).items():
            assert list(lines(panels(again)[gid])[name].get_ydata()) == list(ln.get_ydata())
    assert math.isfinite(recs[-1]["expected_madds"])
