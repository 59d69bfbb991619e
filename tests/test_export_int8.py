"""`fnacli export --precision int8`: onnxruntime's static quantisation of the exported graph,
checked against PyTorch float32 within the tolerance quantisation justifies, and the check
itself shown to catch detections that moved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from fnacli.export_int8 import (  # noqa: E402
    CONFIDENT,
    Int8Parity,
    compare_detections_int8,
    match_confident,
)

SIZE = (96, 96)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SSDLite checkpoint whose class scores are spread out (as training spreads
    them; fresh heads give every anchor the same near-uniform scores)."""
    from conftest import randomize_bn_

    from fnacli.model_checkpoint import DetectorInfo, save_detector
    from fnacli.spec import load_arch
    from fnacli.tasks import get_task

    torch.manual_seed(0)
    spec = load_arch("mobilenetv2-0.5")
    model = get_task("ssdlite").build_model(spec, 3, SIZE)
    randomize_bn_(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.head.classification_head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path_factory.mktemp("int8") / "det.safetensors"
    cats = [{"id": i + 1, "name": f"c{i}"} for i in range(3)]
    save_detector(path, model, DetectorInfo(spec, "ssdlite", 3, SIZE, cats))
    return path


def test_int8_export_is_quantised_and_keeps_the_confident_detections(detector: Path,
                                                                     tmp_path: Path,
                                                                     run_cli) -> None:
    import onnx
    import onnxruntime as ort
    from torchvision.ops import box_iou

    from fnacli.export import DetectorPost, load_model, sample_images

    out = tmp_path / "m.int8.onnx"
    code, stdout, err = run_cli(["export", detector, "-o", out, "--precision", "int8",
                                 "--samples", "3", "--json", "--no-latency"])
    assert code == 0, err
    s = json.loads(stdout)
    assert s["precision"] == "int8" and s["parity"]["ok"], s
    p = s["parity"]
    assert p["confident"] > 0 and p["matched"] >= 0.9 * p["confident"]
    assert p["raw_max_range"] <= p["tolerance"]["raw_max_range"]

    # really int8: QDQ pairs around the convolutions, int8 weights
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)

    # independently of the command's own check: PyTorch float32 vs the file in onnxruntime
    # on a fresh image; the confident boxes overlap one to one (IoU >= 0.5, same label)
    model, _ = load_model(detector)
    x = sample_images(SIZE, 5)[4]  # not among the 3 calibration images
    post = DetectorPost(model).eval()
    with torch.inference_mode():
        boxes, scores, labels = post(x)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    qb, qs, ql = sess.run(None, {"images": x.numpy()})
    keep = scores >= CONFIDENT
    assert keep.sum() > 0
    iou = box_iou(boxes[keep], torch.from_numpy(qb))
    same = torch.from_numpy(ql)[None, :] == labels[keep][:, None]
    found = ((iou >= 0.5) & same).any(dim=1).float().mean().item()
    assert found >= 0.9, found


def test_int8_parity_catches_moved_detections() -> None:
    boxes = np.array([[10, 10, 40, 40], [50, 50, 90, 90], [0, 0, 20, 20]], np.float32)
    scores = np.array([0.9, 0.8, 0.1], np.float32)
    labels = np.array([1, 2, 1])
    ref = (boxes, scores, labels)
    # the same detections, slightly perturbed as quantisation does: all confident ones found
    close = (boxes + 1.5, scores - 0.02, labels)
    assert match_confident(ref, close)[:2] == (2, 2)
    # one box moved to IoU < 0.5, one label changed, the low-score one gone: 0 of 2 found
    moved = boxes.copy()
    moved[0] += 20
    assert match_confident(ref, (moved[:2], scores[:2], np.array([1, 1])))[:2] == (2, 0)
    # a score off by more than the tolerance is not the same detection
    assert match_confident(ref, (boxes, scores - 0.3, labels))[:2] == (2, 0)

    parity = Int8Parity()
    images = [torch.zeros(1, 3, 8, 8)] * 2
    compare_detections_int8(lambda x: ref, lambda x: (moved, scores, labels), images, parity)
    assert parity.confident == 4 and parity.matched == 2 and not parity.ok
    assert "2 of PyTorch's 4 detections" in parity.problems[0]


def test_int8_needs_onnx(detector: Path, tmp_path: Path, run_cli) -> None:
    code, stdout, err = run_cli(["export", detector, "-o", tmp_path / "m.pt", "--format",
                                 "torchscript", "--precision", "int8"])
    assert code == 2 and stdout == "" and "--precision int8" in err
    code, _, err = run_cli(["export", detector, "-o", tmp_path / "m.onnx", "--precision",
                            "fp16"])
    assert code == 2 and "--precision" in err
