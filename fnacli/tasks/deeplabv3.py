"""DeepLabv3 (FNA's segmentation task): torchvision's ``DeepLabV3`` at output stride 16 on the
backbone's last stage (the 1x1 head conv is not used), with a depthwise-separable ASPP (rates
6/12/18, image pooling, 256 channels) and a 1x1 classifier; pixel-wise cross-entropy with 255
ignored; mIoU from a confusion matrix. Parts: ``fnacli.segmentation`` (model, data,
transforms, evaluate)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fnacli.tasks import register
from fnacli.tasks.base import Recipe, SearchDefaults, Task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fnacli.cost.table import CostTable
    from fnacli.spec import ArchSpec

ASPP_GROUP = "aspp"  # ASPP: varies with the last stage's width
CLASSIFIER_GROUP = "seg_classifier"  # the 1x1 classifier: constant


@register
class DeepLabV3Task(Task):
    name = "deeplabv3"
    kind = "segmentation"
    help = "DeepLabv3 at output stride 16 with a separable ASPP (FNA's segmentation)"
    order = 2
    metric = "mIoU"
    metric_names = ("mIoU", "aAcc", "mAcc")
    epoch_metrics = ("mIoU", "aAcc")
    metric_labels = {"mIoU": "mean IoU over classes", "aAcc": "pixel accuracy",
                     "mAcc": "mean class accuracy"}
    uses_head_conv = False
    min_train_batch = 2  # ASPP's image-pooling branch applies BatchNorm to a 1x1 map
    output_stride: ClassVar[int | None] = 16
    default_classes = 19  # Cityscapes' train ids
    per_class_metric = "IoU"
    default_size = (321, 321)  # the search's crops (FNA §4.1)
    profile_size = (2048, 1024)  # FNA Table 1 counts Cityscapes' full 1024x2048
    default_augment = "finetune"
    augments = ("search", "finetune", "none")
    # Fine-tuning (FNA §4.1): 769x769 crops of images rescaled by 0.75-2.0, flips. FNA's text
    # gives no optimiser for it; this is the search's weight recipe (SGD 0.9, wd 5e-4, lr
    # 0.02 per 16 images, cosine) for 240 epochs (DeepLabv3's 90k steps of 8 on Cityscapes).
    recipe = Recipe(optimizer="sgd", lr=0.02, base_batch=16, batch_size=16, momentum=0.9,
                    weight_decay=5e-4, schedule="cosine", milestones=(), warmup_iters=500,
                    epochs=240, clip_grad=None, size=(769, 769))
    # FNA §4.1: 80 epochs, α/β (Adam 1e-3, wd 4e-5) from epoch 30, λ 9e-3, τ 45, weights SGD
    # with 5 warm-up epochs from 1e-4 to 0.02 then cosine to 1e-3; 20% of train for α/β.
    # The cosine here ends at 0, not FNA's 1e-3; γ shifts log_τ(γ·cost) by a constant, which
    # changes no gradient, so it is not a setting.
    search_defaults = SearchDefaults(epochs=80, warmup_epochs=30, arch_every=1, lam=9e-3,
                                     tau=45.0, milestones=(), schedule="cosine", size=(321, 321),
                                     augment="search", arch_lr=1e-3, arch_weight_decay=4e-5,
                                     arch_fraction=0.2, warmup_ratio=1e-4 / 0.02)
    # One-shot (DetNAS-style) on segmentation: the search recipe's length; fitness is on
    # training images held out of supernet training (the search's --fitness-images).
    oneshot_epochs = 80

    # -- model ---------------------------------------------------------------------------
    def build_model(self, spec: ArchSpec, num_classes: int, size: tuple[int, int],
                    backbone: nn.Module | None = None, **kwargs: Any) -> nn.Module:
        from fnacli.segmentation.model import build_deeplabv3

        return build_deeplabv3(spec, num_classes, backbone=backbone,
                               output_stride=self.output_stride or 16, **kwargs)

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone.body

    # -- data ----------------------------------------------------------------------------
    def find_split(self, data: str | Path | None, split: str, ann: str | Path | None = None,
                   images: str | Path | None = None) -> Any:
        from fnacli.segmentation.data import find_split

        return find_split(data, split, ann, images)

    def load_split(self, files: Any, *, train: bool, transform: Callable | None = None,
                   seed: int = 0) -> Any:
        from fnacli.segmentation.data import load_split

        return load_split(files, transform=transform, seed=seed)

    def train_transform(self, augment: str | None = None,
                        size: tuple[int, int] | None = None) -> Callable:
        from fnacli.errors import UserError
        from fnacli.segmentation.transforms import train_transform

        augment = augment or self.default_augment
        if augment not in self.augments:
            raise UserError(f"--augment: {self.name} takes {', '.join(self.augments)}, got "
                            f"{augment!r}")
        return train_transform(augment, size or self.recipe.size)

    def eval_transform(self) -> Callable:
        from fnacli.segmentation.transforms import eval_transform

        return eval_transform()

    def collate(self, batch: list) -> Any:
        from fnacli.segmentation.data import collate

        return collate(batch)

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple:
        from fnacli.segmentation.data import batch_to

        return batch_to(batch, device)

    def check_categories(self, a: list[dict], b: list[dict], what_a: str, what_b: str) -> None:
        from fnacli.segmentation.data import check_same_categories

        check_same_categories(a, b, what_a, what_b)

    # -- loss and metric -----------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict:
        import torch.nn.functional as F

        from fnacli.segmentation.data import IGNORE

        images, masks = self.batch_to(batch, device)
        logits = model(images)["out"]
        return {"loss_ce": F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)}

    def stats_forward(self, model: nn.Module, batch: Any, device: torch.device | str) -> None:
        model(self.batch_to(batch, device)[0])

    def evaluate(self, model: nn.Module, dataset: Any, *, batch_size: int = 8, workers: int = 0,
                 device: torch.device | str = "cpu", per_class: bool = False,
                 progress: Callable[[int], None] | None = None, mode: str = "whole",
                 window: tuple[int, int] | None = None) -> Any:
        from fnacli.segmentation.evaluate import evaluate

        # whole images differ in size: one at a time (batch_size only sets the loader's chunk)
        return evaluate(model, dataset, batch_size=batch_size, workers=workers, device=device,
                        per_class=per_class, progress=progress, mode=mode, window=window)

    def inference_meta(self, size: tuple[int, int]) -> dict:
        # whole images by default (a sliding window of the crop size with mode "slide")
        return {"mode": "whole", "window": list(size)}

    def inference_options(self, extra: dict) -> dict:
        from fnacli.errors import UserError
        from fnacli.segmentation.evaluate import MODES

        inf = extra.get("inference") or {}
        mode = inf.get("mode", "whole")
        window = inf.get("window")
        if mode not in MODES or (mode == "slide" and not (
                isinstance(window, list) and len(window) == 2
                and all(isinstance(v, int) and v > 0 for v in window))):
            raise UserError(f"checkpoint metadata 'inference' {inf!r}: expected mode whole or "
                            "slide with window [width, height]")
        return {"mode": mode, "window": tuple(window) if window else None}

    # -- cost table: ASPP reads the last stage (its cost varies with that width), the
    # classifier is constant -------------------------------------------------------------------
    def _sig(self, table: CostTable, spec: ArchSpec) -> tuple[int, ...]:
        return tuple(table.geometry(spec).stage_out[-1])

    def cost_needs(self, table: CostTable, spec: ArchSpec, map_c: int) -> list[tuple]:
        sig = self._sig(table, spec)
        return [(ASPP_GROUP, map_c, sig), (CLASSIFIER_GROUP, 0, sig)]

    def cost_last_groups(self) -> tuple[str, ...]:
        # the classifier is constant: one copy per last-stage width, weighted by β, sums to it
        return (ASPP_GROUP, CLASSIFIER_GROUP)

    def cost_group(self, name: str) -> tuple[str, str, int] | None:
        if name.startswith("classifier.0."):
            return ASPP_GROUP, "neck", 0
        if name.startswith("classifier.1."):
            return CLASSIFIER_GROUP, "head", -1
        return None

    def cost_stub_maps(self, table: CostTable, spec: ArchSpec, needs: list[tuple]
                       ) -> tuple[list[str], dict[int, set[int]], Callable[[tuple], dict]]:
        name = f"stage{len(spec.stages) - 1}"
        per_var = {0: {c for g, c, _ in needs if g == ASPP_GROUP}}
        return [name], per_var, lambda sig: {name: sig[0:2]}

    # -- latency table: ASPP + classifier (+ the upsampling to the input) timed on a prepared
    # last map, once per last-stage width ---------------------------------------------------
    def latency_maps(self, spec: ArchSpec, sig: tuple[int, ...]
                     ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        name = f"stage{len(spec.stages) - 1}"
        return {ASPP_GROUP: name}, {name: tuple(sig[0:2])}

    def latency_entry(self, group: str, c: int, names: Mapping[str, str],
                      delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        # T(ref) goes in the ASPP entry (the last map is the only one the head reads, so
        # base + delta is simply T at that width); the constant classifier is inside it
        if group == ASPP_GROUP:
            return "neck", base + delta(names[group], c), 0
        return "head", 0, 0

    def cost_core(self, model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
        from fnacli.segmentation.model import COST_PARTS, SegmenterCore

        return SegmenterCore(model), dict(COST_PARTS)
