"""What makes a training state belong to its run, beyond its recipe: the training set it
was trained on (a fingerprint of image ids, file names and sizes and of the annotation
file) and the architecture of its model (tensor names and shapes). ``fnacli.train`` calls
these when a state is resumed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnacli.errors import UserError

TRAIN_SET = "train_set"  # the identity key


def training_set_identity(dataset: Any) -> dict:
    """``{"train_set": {"fingerprint", "from"}}`` for a dataset fnacli reads (a COCO split or
    a segmentation split), ``{}`` for any other. Renaming or moving the dataset keeps the
    fingerprint; another image, annotation or file size changes it."""
    items = _images(dataset)
    if items is None:
        return {}
    h = hashlib.sha256()
    for iid, path in items:
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = -1
        h.update(f"{iid}\t{Path(path).name}\t{size}\n".encode(errors="surrogateescape"))
    ann = getattr(getattr(dataset, "files", None), "ann", None)
    if ann is not None and Path(ann).is_file():
        with open(ann, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    where = str(ann) if ann is not None else str(Path(items[0][1]).parent) if items else "?"
    return {TRAIN_SET: {"fingerprint": h.hexdigest()[:16], "from": where}}


def _images(dataset: Any) -> list[tuple[Any, Path]] | None:
    if hasattr(dataset, "image_path") and hasattr(dataset, "ids"):
        return [(dataset.ids[i], dataset.image_path(i)) for i in range(len(dataset.ids))]
    if isinstance(getattr(dataset, "paths", None), dict) and hasattr(dataset, "ids"):
        return [(i, dataset.paths[i]) for i in dataset.ids]
    return None


def check_resume(state: dict, current: dict, model: Any, path: str | Path,
                 check_rest: Callable[[dict, dict, str | Path], None]) -> None:
    """Before a state is loaded: the same training set (named both ways when not), the rest
    of the identity (``check_rest``), the same architecture (one line, not the 200 of
    ``load_state_dict``)."""
    saved = state["identity"]
    s, c = saved.get(TRAIN_SET), current.get(TRAIN_SET)
    if isinstance(s, dict) and isinstance(c, dict) and s.get("fingerprint") != c["fingerprint"]:
        raise UserError(f"{path}: belongs to a run on another training set ({s.get('from')}, "
                        f"fingerprint {s.get('fingerprint')}); this run trains on {c['from']} "
                        f"(fingerprint {c['fingerprint']}): resume on the same data, or start "
                        "over with --force")
    check_rest({k: v for k, v in saved.items() if k != TRAIN_SET},
               {k: v for k, v in current.items() if k != TRAIN_SET}, path)
    check_same_architecture(model, state["model"], path)


def check_same_architecture(model: Any, tensors: dict, path: str | Path) -> None:
    """``tensors`` (a saved state dict) fit ``model``: the same names and shapes."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want == got:
        return
    wrong = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    n = len(wrong) + len(missing) + len(extra)
    example = (f"{wrong[0]} is {list(got[wrong[0]])} there, {list(want[wrong[0]])} here"
               if wrong else f"{(missing or extra)[0]} is "
               f"{'missing there' if missing else 'not in this model'}")
    raise UserError(f"{path}: the training state belongs to another architecture ({n} tensors "
                    f"differ; {example}): resume with the same model, or start over with "
                    "--force")
