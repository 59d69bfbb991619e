"""DetNAS's fitness images: held out of the one-shot supernet's training split before it
trains (:func:`hold_out_fitness`), and found again when the trained supernet is searched
(:func:`fitness_sets`). Never images of the reporting split (what 'fnacli eval' reports on),
never images the supernet trained on (unless forced).

A run loads each split once (:class:`Splits`): the supernet's training set, the fitness set,
the BN-calibration pool and the reporting split are views of those loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Reporter, task_of

if TYPE_CHECKING:
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig
    from fnacli.pipeline.search_options import SearchOptions


class Splits:
    """The splits of one run, each read and validated once: the training split (loaded for
    training, untransformed), the reporting split (val, or None when the data has none) and
    any fitness annotation file."""

    def __init__(self, o: SearchOptions) -> None:
        self.o = o
        self._loaded: dict[tuple[str, bool], Any] = {}
        self._report: dict[str, Any] = {}

    def load(self, task: Any, files: Any, *, train: bool) -> Any:
        key = (str(files.ann), train)
        if key not in self._loaded:
            self._loaded[key] = task.load_split(files, train=train, seed=self.o.seed)
        return self._loaded[key]

    def train(self, task: Any) -> Any:
        o = self.o
        return self.load(task, task.find_split(o.data, "train", o.train_ann, o.train_images),
                         train=True)

    def report(self, task: Any) -> Any:
        """The split 'fnacli eval' reports on (val), or None when the data has none."""
        if task.name not in self._report:
            o = self.o
            try:
                files = task.find_split(o.data, "val", o.val_ann, o.val_images)
            except UserError:
                if o.val_ann or o.val_images:
                    raise
                files = None
            self._report[task.name] = (None if files is None
                                       else self.load(task, files, train=False))
        return self._report[task.name]


def hold_out_fitness(o: OneShotSearchConfig, train: Any, task: Any,
                     splits: Splits | None = None) -> tuple[Any, dict]:
    """DetNAS's split before supernet training: the training images (``train``, a training
    view) minus the fitness ones, and what to record about the fitness set
    (``fnacli.search.fitness_data``): its source, size, ids fingerprint and the training
    images left out of training (``excluded``)."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    splits = splits or Splits(o)
    report = splits.report(task)
    if o.fitness_ann:
        fit = splits.load(task, FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False)
        FD.check_not_reporting(fit, report, o.force)
        excluded = FD.ids_in(train, fit)
        rest = FD.without_ids(train, excluded) if excluded else train
        if len(rest) == 0:
            raise UserError(f"{o.fitness_ann}: every training image is a fitness image")
        return rest, {"source": "file", "ann": str(fit.files.ann),
                      "img_dir": str(o.fitness_img_dir) if o.fitness_img_dir else None,
                      "images": len(fit), "fingerprint": FD.fingerprint(fit.ids),
                      "excluded": excluded}
    ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
    fit = FD.only_ids(train, ids, transform=None)
    FD.check_not_reporting(fit, report, o.force)
    return FD.without_ids(train, ids), {"source": "train", "ann": str(train.files.ann),
                                        "images": len(ids), "seed": o.seed, "ids": ids,
                                        "fingerprint": FD.fingerprint(ids)}


def _recorded_file(o: OneShotSearchConfig, task: Any, recorded: dict, splits: Splits) -> Any:
    """The fitness file a supernet recorded, loaded again (refused when it is gone or holds
    other images now, unless ``force``)."""
    from pathlib import Path

    from fnacli.search import fitness_data as FD

    if not Path(recorded["ann"]).is_file():
        raise UserError(f"{recorded['ann']}: the supernet's fitness file is gone; pass it "
                        "again with --fitness-ann (and --fitness-img-dir)")
    fit = splits.load(task, FD.fitness_files(recorded["ann"], recorded.get("img_dir")),
                      train=False)
    want = recorded.get("fingerprint")
    if want and FD.fingerprint(fit.ids) != want and not o.force:
        raise UserError(f"{recorded['ann']}: holds other images than when the supernet trained "
                        "(image ids fingerprint differs); pass --force to score on it anyway")
    return fit


def fitness_sets(o: OneShotSearchConfig, info: Any, task: Any, splits: Splits | None = None
                 ) -> tuple[Any, Any, dict]:
    """(fitness set, training images for BN calibration, fitness record) of a search: the
    fitness set recorded in the trained supernet unless the options name another one, which
    may share no image with the supernet's training images (unless ``force``)."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    splits = splits or Splits(o)
    report = splits.report(task)
    evaluation = task.eval_transform()
    train = FD.view(splits.train(task), train=True, transform=evaluation)
    recorded = info.trained.get("fitness") or {}
    if o.fitness_ann or (o.fitness_images is None and recorded.get("source") == "file"):
        fit = (splits.load(task, FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False)
               if o.fitness_ann else _recorded_file(o, task, recorded, splits))
        fit = FD.view(fit, transform=evaluation)
        record = {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
        calib = FD.without_files(train, fit)
    else:
        if recorded.get("source") == "train" and o.fitness_images is None:
            ids = [int(i) for i in recorded["ids"]]
        else:
            ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
        fit = FD.only_ids(train, ids, transform=evaluation)
        record = {"source": "train", "ann": str(train.files.ann), "images": len(ids),
                  "seed": int(recorded.get("seed", o.seed)), "ids": ids}
        calib = FD.without_ids(train, ids)
    FD.check_not_reporting(fit, report, o.force)
    shared = FD.check_not_trained_on(fit, FD.trained_on(train, recorded), bool(recorded),
                                     o.force)
    if shared:
        Reporter(o.on_message).warning(f"{len(shared)} fitness images were training images of "
                                       "the supernet (--force)")
    return fit, calib, record
