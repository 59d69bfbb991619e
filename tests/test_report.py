"""Results' reports (``fnacli.report``): the plain-text tables, the exact lines and tables a
result reports, and the CLI's ``show`` printing them on stderr."""

from __future__ import annotations

import pytest

from fnacli.report import Table, report_text


def test_table_str_aligns_columns_and_places_title_and_caption() -> None:
    t = Table("costs", ("name", "MAdds"), [("a", "1.5M"), ("longer", "300.0M")],
              right=("MAdds",), caption="2 specs")
    assert str(t) == "\n".join(["costs",
                                "name     MAdds",
                                "------  ------",
                                "a         1.5M",
                                "longer  300.0M",
                                "2 specs"])
    centred = Table("AP", ("metric", "value"), [("AP50", "0.5000")], right=("value",),
                    centred=True)
    assert str(centred).splitlines()[0] == "      AP"  # over the 14 columns of the table
    assert str(Table("empty", ("a", "bb"))).splitlines() == ["empty", "a  bb", "-  --"]
    assert report_text(["one", t, "two"]).splitlines()[0::7] == ["one", "two"]


def test_remap_report_names_stages_sources_and_output() -> None:
    from fnacli.pipeline.remap import RemapResult
    from fnacli.spec import load_arch

    seed, new = load_arch("mobilenetv2-1.0"), load_arch("mobilenetv2-0.5")
    stages = [{"stage": 1, "seed": {"out": 24, "stride": 2, "ops": ["k3_e6", "k3_e6"]},
               "new": {"out": 16, "stride": 1, "ops": ["k3_e6", "k5_e3", "k5_e3"]},
               "sources": [0, 1, 1]}]
    r = RemapResult("seed.pth", "t.safetensors", seed, new, {}, 1234567, stages)
    table, wrote = r.report()
    assert wrote == "wrote t.safetensors (1,234,567 parameters)"
    assert table.title == "remap: seed → new" and table.right == ("stage", "seed out", "new out")
    assert table.rows == [("stem", "32", "conv3x3", "16", "conv3x3", "stem"),
                          ("1", "24 s2", "k3_e6×2", "16 s1", "k3_e6 k5_e3×2", "L0 L1 L1"),
                          ("head", "1280", "conv1x1", "1280", "conv1x1", "head")]
    r.output = None  # kept in memory only: nothing was written
    assert [type(x) for x in r.report()] == [Table]


def test_evaluate_report_labels_metrics_and_marks_absent_classes() -> None:
    from fnacli.pipeline.evaluate import EvaluateResult

    r = EvaluateResult("runs/final.safetensors", "deeplabv3", "data/val", 2,
                       {"mIoU": 0.25, "aAcc": 0.5, "mAcc": 0.125},
                       {"road": 0.5, "wall": float("nan")}, per_class_metric="IoU")
    metrics, per_class = r.report()
    assert metrics.title == "final.safetensors on val (2 images)" and metrics.centred
    assert metrics.rows == [("mean IoU over classes", "mIoU", "0.2500"),
                            ("pixel accuracy", "aAcc", "0.5000"),
                            ("mean class accuracy", "mAcc", "0.1250")]
    assert per_class.title == "IoU per category" and per_class.right == ("IoU",)
    assert per_class.rows == [("road", "0.5000"), ("wall", "–")]
    r.detections = [{}] * 3
    assert r.report()[0].title.endswith("(2 images, 3 detections)")


def test_profile_and_table_reports() -> None:
    from fnacli.cost.count import Profile
    from fnacli.pipeline.profile import ProfileResult

    p = Profile("arch.json", "ssdlite", (320, 320), 80, {"backbone": 1_000_000, "head": 5},
                {"backbone": 2_500_000_000, "neck": 999, "head": 1500})
    r = ProfileResult("ssdlite", (320, 320), 80, "lookup table", 0.04, [p])
    (table,) = r.report()
    assert table.title == "ssdlite @ 320x320, 80 classes (lookup table, 0.0s)"
    assert table.columns == ("name", "params", "MAdds", "backbone", "neck", "head")
    assert table.rows == [("arch.json", "1.00M", "2.50G", "2.50G", "999", "1.50K")]
    assert table.right == table.columns[1:]
    p.extra["latency_ms"] = 1.234

    class Lat:
        def describe(self) -> str:
            return "this CPU"

    r.latency_source, r.latency_table = "lat.json", Lat()
    (table,) = r.report()
    assert table.title.endswith("(lookup table, 0.0s); latency by lat.json (this CPU)")
    assert table.rows[0][-1] == "1.23 ms" and table.columns[-1] == "latency"


def test_synth_result_report_and_summary() -> None:
    from fnacli.detection.synthetic import SynthConfig
    from fnacli.pipeline.data import SynthResult

    r = SynthResult("data", "detection", SynthConfig(train=4, val=2, size=64, classes=2),
                    {"train": 7, "val": 3})
    assert r.report() == ["synthetic data: 4 train images (7 objects), 2 val images (3 "
                          "objects), 2 classes, 64x64, variant shapes -> data"]
    assert r.to_dict() == {"output": "data", "train_images": 4, "val_images": 2,
                           "train_objects": 7, "val_objects": 3, "classes": 2, "size": 64,
                           "seed": 0, "variant": "shapes"}


def test_show_prints_lines_as_text_and_tables_on_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    from fnacli.cli.common import show

    show(["a [bold]line[/bold] [0.01]", Table("t", ("k", "v"), [("x", "1")], right=("v",))])
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "a [bold]line[/bold] [0.01]"  # no rich markup eaten
    assert lines[1] == "t" and "│ x │ 1 │" in err
