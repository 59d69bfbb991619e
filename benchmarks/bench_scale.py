"""fnacli's data path on a COCO-2017-size set (issue 27): start-up, worker memory, evaluation.

The script builds the set itself: a few distinct real JPEGs (``fnacli data synth``'s scenes
at COCO's usual sizes: 640x480, 480x640, 640x427, ...) hard-linked under 118,287 training
and 5,000 validation names, so the disk holds 8 images; the annotation files are COCO-like
(80 category ids with COCO's gaps, ~7.3 boxes per image, each with an 8-point polygon, ~1%
crowd boxes). Every row measures fnacli and a plain reference side by side in this one run
and prints their ratio beside the issue's goal:

- launch → first training step: ``fnacli finetune --workers 2 --stop-after 1`` as a process
  (first run with an empty split cache, then again with the cache) vs pycocotools'
  ``COCO(train.json)`` in a process;
- of which the split load (``load_split``, in this process, cold cache) vs the same COCO load;
- image checks: fnacli's header check of every training image vs PIL's header-only
  ``Image.open(p).size``, one thread (the hard links make both read the page cache: this
  is their CPU cost; on a real disk header reads also save the I/O of whole files);
- a 5k-image hold-out view of the loaded training split (``CocoDetection.view``);
- worker memory: private memory (USS, and PSS, from ``/proc/PID/smaps_rollup``) each
  data-loader worker gains over a full epoch, with 2 and 4 workers, fnacli's dataset vs
  detectron2's layout (each record pickled into one numpy byte buffer), and the layout
  before issue 27 (a pycocotools index in the dataset). Items take every field a training
  item takes from the dataset (path, boxes, labels, id; the header for the image size) but
  do not decode pixels, whose memory is transient and the same for any layout;
- evaluation on the val split: peak RSS and time of ``fnacli.detection.evaluate.evaluate``
  vs a plain loop (forward, per-detection result dicts, ``loadRes``, ``COCOeval``), each in
  its own process, the same replayed detector outputs (~300 boxes per image) on both sides;
  ``--eval-reps`` runs of each side, alternating (default 2; 1 on the full set, where one
  COCOeval takes minutes).

Timings are noisy on a shared machine: the table prints what it measured. Usage::

    python benchmarks/bench_scale.py [--quick | --images N] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine  # noqa: E402

FULL_TRAIN, FULL_VAL = 118_287, 5_000
BOXES_PER_IMAGE = 859_999 / 118_287
# COCO's 80 category ids (1..90 with gaps)
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (640, 424), (500, 375), (375, 500),
         (612, 612))
DETECTIONS_PER_IMAGE = 300
HOLDOUT = 5_000


# -- the data set -----------------------------------------------------------------------------
def _distinct_images(folder: Path) -> list[tuple[Path, tuple[int, int]]]:
    from fnacli.detection.synthetic import SynthConfig, make_image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (w, h) in enumerate(SIZES):
        cfg = SynthConfig(size=w, height=h, classes=80, max_objects=12, min_scale=0.05,
                          max_scale=0.3, seed=k)
        image, _ = make_image(cfg, "train", k)
        path = folder / f"{k}.jpg"
        image.save(path, quality=90)
        out.append((path, (w, h)))
    return out


def _annotation_text(rng: np.random.Generator, ids: np.ndarray, sizes: np.ndarray,
                     first_ann: int) -> tuple[str, int]:
    """The "annotations" list of a split as JSON text (built as text: 860k dicts would take
    GBs), and the number of boxes."""
    counts = np.minimum(1 + rng.poisson(BOXES_PER_IMAGE - 1, len(ids)), 60)
    n = int(counts.sum())
    image = np.repeat(np.arange(len(ids)), counts)
    W, H = sizes[image, 0].astype(float), sizes[image, 1].astype(float)
    w = np.maximum(2.0, W * rng.beta(1.2, 4, n))
    h = np.maximum(2.0, H * rng.beta(1.2, 4, n))
    x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
    cats = np.asarray(CATEGORY_IDS)[rng.integers(0, 80, n)]
    crowd = rng.random(n) < 0.01
    t = np.linspace(0, 2 * np.pi, 9)[:-1]  # an octagon inside each box
    px = x[:, None] + w[:, None] * (0.5 + 0.5 * np.cos(t))
    py = y[:, None] + h[:, None] * (0.5 + 0.5 * np.sin(t))
    poly = np.stack([px, py], 2).reshape(n, 16).round(1)
    area = (0.707 * w * h).round(2)
    parts = []
    for k in range(n):
        seg = ",".join(map(str, poly[k].tolist()))
        parts.append(f'{{"segmentation":[[{seg}]],"area":{area[k]},"iscrowd":{int(crowd[k])},'
                     f'"image_id":{ids[image[k]]},"bbox":[{x[k]:.2f},{y[k]:.2f},{w[k]:.2f},'
                     f'{h[k]:.2f}],"category_id":{cats[k]},"id":{first_ann + k}}}')
    return "[" + ",".join(parts) + "]", n


def build_set(root: Path, train: int, val: int, seed: int = 0) -> dict:
    """COCO layout under ``root`` (train2017/, val2017/, annotations/); returns counts."""
    rng = np.random.default_rng(seed)
    distinct = _distinct_images(root / "distinct")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cats = json.dumps([{"id": c, "name": f"class{c}", "supercategory": "thing"}
                       for c in CATEGORY_IDS])
    boxes, first_ann, start = {}, 1, 9
    for split, n in (("train", train), ("val", val)):
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        ids = start + 4 * np.arange(n)  # sparse ids, as COCO's
        start = int(ids[-1]) + 7
        pick = rng.integers(0, len(distinct), n)
        sizes = np.asarray([distinct[k][1] for k in pick])
        images = []
        for iid, k, (w, h) in zip(ids.tolist(), pick.tolist(), sizes.tolist(), strict=True):
            name = f"{iid:012d}.jpg"
            os.link(distinct[k][0], folder / name)
            images.append(f'{{"id":{iid},"file_name":"{name}","width":{w},"height":{h},'
                          f'"license":1}}')
        anns, count = _annotation_text(rng, ids, sizes, first_ann)
        first_ann += count
        boxes[split] = count
        text = (f'{{"info":{{"description":"fnacli bench_scale"}},"licenses":[],'
                f'"images":[{",".join(images)}],"annotations":{anns},"categories":{cats}}}')
        (root / "annotations" / f"instances_{split}2017.json").write_text(text)
    # the files date from before any cache the benchmark writes (see split_cache)
    past = time.time_ns() - 10 * 10**9
    for p in [d[0] for d in distinct] + list((root / "annotations").iterdir()):
        os.utime(p, ns=(past, past))
    return boxes


# -- children: each measurement that needs its own process ----------------------------------
def child(argv: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run this script as ``--child ...`` and return the JSON of its last stdout line."""
    r = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                       text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"child {argv} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def child_coco(ann: str) -> dict:
    from pycocotools.coco import COCO

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        COCO(ann)
    return {"seconds": time.perf_counter() - t}


def _private_mb(pid: int) -> tuple[float, float]:
    """(USS, PSS) of a process in MB, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return ((fields["Private_Clean"] + fields["Private_Dirty"]) / 1024, fields["Pss"] / 1024)


def _layouts():  # noqa: ANN202 - three Dataset classes, built once torch is imported
    import pickle

    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    def header_size(path: str) -> tuple[int, int]:
        with Image.open(path) as im:
            return im.size

    class Ours(Dataset):
        """fnacli's dataset as training reads it, minus the pixel decode."""

        def __init__(self, ds) -> None:  # noqa: ANN001
            self.ds = ds

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, i: int) -> dict:
            w, h = header_size(self.ds.image_path(i))
            return self.ds.target(i, (h, w))

    class Detectron2(Dataset):
        """detectron2's layout: each record pickled into one numpy byte buffer."""

        def __init__(self, ds) -> None:  # noqa: ANN001
            blobs = []
            for i in range(len(ds)):
                t = ds.target(i, (1, 1))
                blobs.append(pickle.dumps({"file_name": ds.image_path(i),
                                           "image_id": t["image_id"],
                                           "boxes": t["boxes"].numpy(),
                                           "labels": t["labels"].numpy()}, protocol=5))
            self.end = np.cumsum([len(b) for b in blobs])
            self.buf = np.frombuffer(b"".join(blobs), np.uint8)

        def __len__(self) -> int:
            return len(self.end)

        def __getitem__(self, i: int) -> dict:
            start = int(self.end[i - 1]) if i else 0
            rec = pickle.loads(self.buf[start:int(self.end[i])].tobytes())
            header_size(rec["file_name"])
            return {"boxes": torch.from_numpy(rec["boxes"]),
                    "labels": torch.from_numpy(rec["labels"]), "image_id": rec["image_id"]}

    class Before(Dataset):
        """The dataset before issue 27: a pycocotools index, a paths dict, a set of box ids."""

        def __init__(self, ds) -> None:  # noqa: ANN001
            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(ds.files.ann))
            folder = Path(ds.image_path(0)).parent
            self.paths = {i: folder / im["file_name"] for i, im in self.coco.imgs.items()}
            self.ids = ds.ids
            self.label = {c: k + 1 for k, c in enumerate(sorted(self.coco.cats))}
            self.skip = {a["id"] for a in self.coco.anns.values()
                         if a["bbox"][2] <= 1 or a["bbox"][3] <= 1}

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict:
            iid = self.ids[i]
            anns = [a for a in self.coco.imgToAnns.get(iid, [])
                    if not (a["iscrowd"] or a["id"] in self.skip)]
            header_size(str(self.paths[iid]))
            boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                   a["bbox"][1] + a["bbox"][3]] for a in anns],
                                 dtype=torch.float32).reshape(-1, 4)
            return {"boxes": boxes, "image_id": iid,
                    "labels": torch.tensor([self.label[a["category_id"]] for a in anns])}

    return {"ours": Ours, "detectron2": Detectron2, "before": Before}


def child_memory(data: str, layout: str, workers: int) -> dict:
    """Each worker's USS/PSS growth (MB) over one epoch of ``layout``."""
    import gc

    from torch.utils.data import DataLoader

    from fnacli.detection.data import find_split, load_split

    ds = load_split(find_split(data, "train"), train=True, label_offset=1)
    items = _layouts()[layout](ds)
    del ds
    gc.collect()
    loader = DataLoader(items, batch_size=32, num_workers=workers, collate_fn=len)
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]  # noqa: SLF001 - the benchmark reads worker pids
    start = [_private_mb(p) for p in pids]
    t = time.perf_counter()
    for _ in range(len(loader) - 2):
        next(it)
    end = [_private_mb(p) for p in pids]  # every item has been made (prefetch) by now
    for _ in it:
        pass
    return {"uss": [e[0] - s[0] for s, e in zip(start, end, strict=True)],
            "pss": [e[1] - s[1] for s, e in zip(start, end, strict=True)],
            "seconds": time.perf_counter() - t, "parent_uss": _private_mb(os.getpid())[0]}


def _replay_outputs(ds) -> list[dict]:  # noqa: ANN001
    """Per item: ~300 boxes, the item's ground truth slightly off plus random ones."""
    import torch

    outs = []
    for i in range(len(ds)):
        t = ds.target(i, (1, 1))
        g = torch.Generator().manual_seed(t["image_id"])
        gt = t["boxes"].as_subclass(torch.Tensor)
        k = max(0, DETECTIONS_PER_IMAGE - len(gt))
        xy = torch.rand(k, 2, generator=g) * 400
        wh = torch.rand(k, 2, generator=g) * 200 + 2
        boxes = torch.cat([gt + torch.rand(gt.shape, generator=g) * 4,
                           torch.cat([xy, xy + wh], 1)])
        labels = torch.cat([t["labels"], torch.randint(1, 81, (k,), generator=g)])
        scores = torch.cat([0.5 + 0.5 * torch.rand(len(gt), generator=g),
                            0.6 * torch.rand(k, generator=g)])
        outs.append({"boxes": boxes, "labels": labels, "scores": scores})
    return outs


def _replay_model(outputs: list[dict]):  # noqa: ANN202 - an nn.Module
    from torch import nn

    class Replay(nn.Module):
        """A detector whose outputs were computed beforehand (the same on both sides)."""

        def __init__(self) -> None:
            super().__init__()
            self.next = 0

        def forward(self, images: list) -> list[dict]:
            out = outputs[self.next:self.next + len(images)]
            self.next += len(images)
            return out

    return Replay()


def _plain_eval(model, ds, ann: str) -> float:  # noqa: ANN001
    """What a pycocotools user writes: forward, one dict per detection, loadRes, COCOeval."""
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torch.utils.data import DataLoader

    from fnacli.detection.data import collate

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann)
    cat_ids = sorted(gt.cats)
    results = []
    with torch.no_grad():
        for images, targets in DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate):
            for out, t in zip(model(images), targets, strict=True):
                xyxy = out["boxes"].tolist()
                for b, label, score in zip(xyxy, out["labels"].tolist(), out["scores"].tolist(),
                                           strict=True):
                    results.append({"image_id": t["image_id"],
                                    "category_id": cat_ids[label - 1],
                                    "bbox": [round(b[0], 2), round(b[1], 2),
                                             round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                                    "score": round(score, 5)})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def child_eval(data: str, side: str) -> dict:
    """Seconds and peak RSS (MB) of one side's evaluation of the val split."""
    import gc
    import resource

    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.evaluate import evaluate
    from fnacli.detection.transforms import eval_transform

    files = find_split(data, "val")
    outputs = _replay_outputs(load_split(files, train=False, label_offset=1))
    gc.collect()
    t = time.perf_counter()
    ds = load_split(files, train=False, label_offset=1, transform=eval_transform())
    if side == "ours":
        ap = evaluate(_replay_model(outputs), ds, batch_size=8, workers=2).stats["AP"]
    else:
        ap = _plain_eval(_replay_model(outputs), ds, str(files.ann))
    return {"seconds": time.perf_counter() - t, "AP": ap,
            "detections": sum(len(o["scores"]) for o in outputs),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- rows -------------------------------------------------------------------------------------
def row(name: str, ours: float, ref: float | None, unit: str, goal: float | None,
        ref_name: str = "", note: str = "") -> dict:
    ratio = ours / ref if ref else None
    return {"measurement": name, "fnacli": ours, "reference": ref, "unit": unit,
            "reference_name": ref_name, "ratio": ratio, "goal": goal, "note": note,
            "ok": None if goal is None or ratio is None else ratio <= goal}


def _backbone_target(path: Path) -> Path:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.nn.backbone import Backbone
    from fnacli.spec import mobilenetv2

    spec = mobilenetv2(0.35)
    save_checkpoint(path, Backbone(spec).state_dict(), "backbone", {"spec": spec.to_dict()})
    return path


def first_step(data: Path, target: Path, out: Path, cache: Path) -> float:
    """Seconds from launching ``fnacli finetune`` to its first step's metrics line."""
    metrics = Path(f"{out}.metrics.jsonl")
    log = out.with_suffix(".stderr")
    cmd = [sys.executable, "-m", "fnacli", "finetune", str(target), "--task", "ssdlite",
           "--data", str(data), "-o", str(out), "--workers", "2", "--batch-size", "2",
           "--size", "160", "--epochs", "1", "--stop-after", "1", "--log-every", "1"]
    env = {**os.environ, "FNACLI_CACHE_DIR": str(cache)}
    with open(log, "w") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        seen = None
        while seen is None and p.poll() is None:
            if metrics.exists() and '"train"' in metrics.read_text():
                seen = time.perf_counter() - t0
            else:
                time.sleep(0.05)
        try:
            p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            p.wait()
    if seen is None and metrics.exists() and '"train"' in metrics.read_text():
        seen = time.perf_counter() - t0  # it finished between two looks
    if seen is None:
        raise RuntimeError(f"finetune never reached a step:\n{log.read_text()[-3000:]}")
    return seen


def startup_rows(data: Path, work: Path) -> tuple[list[dict], object]:
    """The start-up rows, and the loaded training split (for the image-check row)."""
    from fnacli.detection.data import find_split, load_split

    ann = str(find_split(data, "train").ann)
    target = _backbone_target(work / "target.safetensors")
    coco = [child(["coco", ann])["seconds"] for _ in range(2)]
    ref = sum(coco) / len(coco)
    cold_cache, load_cache = work / "cache-run", work / "cache-load"
    cold = first_step(data, target, work / "run1.safetensors", cold_cache)
    warm = first_step(data, target, work / "run2.safetensors", cold_cache)
    os.environ["FNACLI_CACHE_DIR"] = str(load_cache)
    t = time.perf_counter()
    train = load_split(find_split(data, "train"), train=True, label_offset=1)
    load_cold = time.perf_counter() - t
    t = time.perf_counter()
    load_split(find_split(data, "train"), train=True, label_offset=1)
    load_warm = time.perf_counter() - t
    t = time.perf_counter()
    ids = train.all_image_ids
    held = train.view(ids[:: max(1, len(ids) // HOLDOUT)][:HOLDOUT], train=False)
    view_s = time.perf_counter() - t
    name = "COCO(train.json)"
    return [row("launch → first training step (finetune --workers 2), first run", cold, ref,
                "s", 1.5, name),
            row("launch → first training step, second run (split cache)", warm, ref, "s", 1.2,
                name),
            row("of which: load_split(train), first run (in-process)", load_cold, ref, "s",
                None, name),
            row("of which: load_split(train), second run (in-process)", load_warm, ref, "s",
                None, name),
            row(f"fitness hold-out: a {len(held)}-image view of the loaded split", view_s, None,
                "s", None, note="CocoDetection.view: no second load")], train


def image_check_rows(train) -> list[dict]:  # noqa: ANN001
    from PIL import Image

    from fnacli.detection.image_check import image_sizes

    paths = [train.records.path(k) for k in range(len(train.records))]

    def pil() -> None:
        for p in paths:
            with Image.open(p) as im:
                im.size  # noqa: B018 - the header parse is the point

    times: dict[str, list[float]] = {"ours": [], "pil": []}
    for _ in range(2):
        for name, fn in (("ours", lambda: image_sizes(paths, "header")), ("pil", pil)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ours, ref = (sum(v) / len(v) for v in times.values())
    return [row(f"image checks ({len(paths)} headers, parallel)", ours, ref, "s", 1.0,
                "PIL header-only size, 1 thread")]


def memory_rows(data: Path) -> list[dict]:
    rows = []
    for workers in (2, 4):
        got = {k: child(["memory", str(data), k, str(workers)])
               for k in ("ours", "detectron2", "before") if k != "before" or workers == 2}
        worst = {k: max(v["uss"]) for k, v in got.items()}
        note = (f"PSS +{max(got['ours']['pss']):.1f} MB; before issue 27: "
                f"+{worst['before']:.0f} MB" if "before" in got else
                f"PSS +{max(got['ours']['pss']):.1f} MB")
        rows.append(row(f"worker private memory (USS) after a full epoch, {workers} workers",
                        worst["ours"], worst["detectron2"], "MB", None,
                        "records pickled in one byte buffer (detectron2)", note))
        rows[-1]["ratio"] = None  # a few hundred kB either way: a ratio says nothing
        rows[-1]["ok"] = worst["ours"] < 50
        rows[-1]["goal_text"] = "< 50 MB"
    return rows


def eval_rows(data: Path, reps: int) -> list[dict]:
    """Each side ``reps`` times, in the order ours, plain, plain, ours, ... (load drifts hit
    both alike); the mean time and the largest peak of each side."""
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for r in range(reps):
        for side in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            runs[side].append(child(["eval", str(data), side]))
    ours, plain = ({"seconds": sum(x["seconds"] for x in v) / len(v),
                    "peak_mb": max(x["peak_mb"] for x in v), "AP": v[0]["AP"],
                    "detections": v[0]["detections"]} for v in runs.values())
    if abs(ours["AP"] - plain["AP"]) > 1e-12:
        raise RuntimeError(f"the two evaluations disagree: AP {ours['AP']} vs {plain['AP']}")
    n = f"{ours['detections']:,} detections, AP {ours['AP']:.4f} on both sides"
    return [row("eval: peak RSS", ours["peak_mb"], plain["peak_mb"], "MB", 1.05,
                "pycocotools COCOeval on the same detections", n),
            row("eval: time", ours["seconds"], plain["seconds"], "s", 1.1,
                "forward + COCOeval", n)]


# -- the table --------------------------------------------------------------------------------
def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:+.1f} MB" if unit == "MB" and v < 100 else f"{v:,.2f} {unit}"


def render(rows: list[dict], header: str) -> str:
    lines = [header, "", "| measurement | fnacli | reference | ratio | goal | met |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ref = _value(r["reference"], r["unit"]) + (f" ({r['reference_name']})"
                                                   if r["reference_name"] else "")
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "—"
        goal = r.get("goal_text") or (f"≤ {r['goal']}x" if r["goal"] else "—")
        met = {True: "yes", False: "no", None: "—"}[r["ok"]]
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['measurement']}{note} | {_value(r['fnacli'], r['unit'])} | {ref} "
                     f"| {ratio} | {goal} | {met} |")
    return "\n".join(lines)


def sizes_of(args: argparse.Namespace) -> tuple[int, int]:
    total = args.images or (10_000 if args.quick else FULL_TRAIN + FULL_VAL)
    val = max(8, round(total * FULL_VAL / (FULL_TRAIN + FULL_VAL)))
    return total - val, val


def run(args: argparse.Namespace) -> list[dict]:
    train_n, val_n = sizes_of(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fnacli-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "coco"
    os.environ["FNACLI_CACHE_DIR"] = str(work / "cache-bench")
    try:
        t = time.perf_counter()
        if data.exists():
            shutil.rmtree(data)
        boxes = build_set(data, train_n, val_n)
        build_s = time.perf_counter() - t
        rows, train = startup_rows(data, work)
        rows += image_check_rows(train)
        del train
        if not args.skip_memory:
            rows += memory_rows(data)
        rows += eval_rows(data, args.eval_reps or (2 if val_n <= 1000 else 1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["set"] = {"train_images": train_n, "val_images": val_n, "train_boxes": boxes["train"],
                    "val_boxes": boxes["val"], "build_seconds": round(build_s, 1)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="10k images instead of 123k")
    size.add_argument("--images", type=int, default=None, help="images in all (train + val)")
    ap.add_argument("--workdir", default=None, help="where to build the set (default: a "
                    "temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the worker rows")
    ap.add_argument("--eval-reps", type=int, default=None, help="evaluations per side "
                    "(default: 2, 1 for a val split over 1000 images)")
    ap.add_argument("--json", action="store_true", help="the rows as JSON on stdout")
    ap.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        out = {"coco": lambda: child_coco(*rest),
               "memory": lambda: child_memory(rest[0], rest[1], int(rest[2])),
               "eval": lambda: child_eval(*rest)}[kind]()
        print(json.dumps(out))
        return
    t = time.perf_counter()
    rows = run(args)
    s = rows[0]["set"]
    header = (f"bench_scale: {s['train_images']:,} train images ({s['train_boxes']:,} boxes), "
              f"{s['val_images']:,} val images ({s['val_boxes']:,} boxes), 80 categories; "
              f"set built in {s['build_seconds']} s, all in {time.perf_counter() - t:.0f} s; "
              f"{json.dumps(machine(int(os.environ.get('OMP_NUM_THREADS', '0') or 0)))}")
    if args.json:
        print(json.dumps({"header": header, "rows": rows}))
    else:
        print(render(rows, header))


if __name__ == "__main__":
    main()
