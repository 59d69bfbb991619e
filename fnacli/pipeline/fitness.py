"""DetNAS's fitness images: held out of the one-shot supernet's training split before it
trains (:func:`hold_out_fitness`), and found again when the trained supernet is searched
(:func:`fitness_sets`). Never images of the reporting split (what 'fnacli eval' reports on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Reporter, task_of

if TYPE_CHECKING:
    from fnacli.pipeline.search import SearchOptions
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig


def _reporting_split(o: SearchOptions, task: Any) -> Any:
    """The split 'fnacli eval' reports on (val), or None when the data has none."""
    try:
        files = task.find_split(o.data, "val", o.val_ann, o.val_images)
    except UserError:
        if o.val_ann or o.val_images:
            raise
        return None
    return task.load_split(files, train=False)


def hold_out_fitness(o: OneShotSearchConfig, train: Any, task: Any) -> tuple[Any, dict]:
    """DetNAS's split before supernet training: the training images minus the fitness ones,
    and what to record about the fitness set (``fnacli.search.fitness_data``)."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    report = _reporting_split(o, task)
    if o.fitness_ann:
        fit = task.load_split(FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False,
                              transform=task.eval_transform())
        FD.check_not_reporting(fit, report, o.force)
        rest = FD.without_files(train, fit)
        if len(rest) == 0:
            raise UserError(f"{o.fitness_ann}: every training image is a fitness image")
        return rest, {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
    ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
    fit = FD.only_ids(task.load_split(train.files, train=False), ids)
    FD.check_not_reporting(fit, report, o.force)
    return FD.without_ids(train, ids), {"source": "train", "ann": str(train.files.ann),
                                        "images": len(ids), "seed": o.seed, "ids": ids}


def fitness_sets(o: OneShotSearchConfig, info: Any, task: Any) -> tuple[Any, Any, dict]:
    """(fitness set, training images for BN calibration, fitness record) of a search: the
    trained supernet's held-out images when it recorded them, else as the options say."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    report = _reporting_split(o, task)
    train = task.load_split(task.find_split(o.data, "train", o.train_ann, o.train_images),
                            train=True, transform=task.eval_transform())
    recorded = info.trained.get("fitness") or {}
    if o.fitness_ann:
        fit = task.load_split(FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False,
                              transform=task.eval_transform())
        record = {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
        calib = FD.without_files(train, fit)
    else:
        if recorded.get("source") == "train" and o.fitness_images is None:
            ids = [int(i) for i in recorded["ids"]]
        else:
            if recorded and o.fitness_images is not None:
                Reporter(o.on_message).warning("--fitness-images differs from the supernet's "
                                               "training, whose held-out images are not these")
            ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
        fit = FD.only_ids(task.load_split(train.files, train=False,
                                          transform=task.eval_transform()), ids)
        record = {"source": "train", "ann": str(train.files.ann), "images": len(ids),
                  "seed": int(recorded.get("seed", o.seed)), "ids": ids}
        calib = FD.without_ids(train, ids)
    FD.check_not_reporting(fit, report, o.force)
    return fit, calib, record


