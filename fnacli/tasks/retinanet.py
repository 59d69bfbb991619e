"""RetinaNet (as in FNA): torchvision's ``RetinaNet`` on an FPN (256 channels) over the last
stage outputs at strides 8/16/32, P6 a 3x3 stride-2 conv on C5 (not P5), P7 from P6, 9
anchors, 4-conv heads, sigmoid focal loss over ``num_classes`` (labels 0..num_classes-1).
The backbone's 1x1 head conv is not used. Parts: ``fnacli.detection.models``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fnacli.tasks import register
from fnacli.tasks.base import Recipe, SearchDefaults
from fnacli.tasks.detection import DetectionTask

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fnacli.cost.lut import Lut
    from fnacli.cost.table import CostTable
    from fnacli.spec import ArchSpec


@register
class RetinaNetTask(DetectionTask):
    name = "retinanet"
    help = "RetinaNet on an FPN over strides 8/16/32 (FNA's RetinaNet)"
    order = 1
    uses_head_conv = False
    label_offset = 0
    default_size = (1333, 800)
    profile_size = (1088, 800)
    default_augment = "flip"
    # FNA's released config: SGD, lr 0.05 per 32 images, the 1x schedule (12 epochs).
    recipe = Recipe(optimizer="sgd", lr=0.05, base_batch=32, batch_size=8, momentum=0.9,
                    weight_decay=5e-5, schedule="step", milestones=(8 / 12, 11 / 12),
                    warmup_iters=500, epochs=12, clip_grad=35.0, size=(1333, 800))
    # FNA's appendix (Jung et al. the same): 14 epochs, weights only for 8, then one weight
    # step and one α/β step; SGD 0.9 wd 1e-4 warmed up over 500 iterations to 0.02 at batch 8,
    # x0.1 at 8 and 11; λ 0.02 τ 10 γ 5; no random flip during search; MAdds at 1088x800.
    search_defaults = SearchDefaults(epochs=14, warmup_epochs=8, arch_every=1, lam=0.02,
                                     tau=10.0, milestones=(8 / 14, 11 / 14), gamma=5.0,
                                     optimizer="sgd", lr=0.02, base_batch=8, batch_size=8,
                                     momentum=0.9, weight_decay=1e-4, warmup_iters=500,
                                     clip_grad=35.0, augment="none", cost_size=(1088, 800))
    # DetNAS trains its supernet with the detector's usual 1x COCO schedule.
    oneshot_epochs = 12

    def build_model(self, spec: ArchSpec, num_classes: int, size: tuple[int, int],
                    backbone: nn.Module | None = None, **kwargs: Any) -> nn.Module:
        from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

        from fnacli.detection.models import (
            IMAGE_MEAN,
            IMAGE_STD,
            FPNFeatures,
            anchor_generator,
            fpn_input_names,
        )
        from fnacli.nn.backbone import Backbone

        body = backbone if backbone is not None else Backbone(spec, with_head=False)
        feats = FPNFeatures(body, fpn_input_names(spec))
        anchors = anchor_generator()
        head = RetinaNetHead(feats.out_channels, anchors.num_anchors_per_location()[0],
                             num_classes)
        opts = {"image_mean": IMAGE_MEAN, "image_std": IMAGE_STD, **kwargs}
        return RetinaNet(feats, num_classes, min_size=min(size), max_size=max(size),
                         anchor_generator=anchors, head=head, **opts)

    # -- cost table: each FPN lateral varies with its stage's width (P6 with C5's), the rest
    # of the FPN and the heads are constant --------------------------------------------------
    def layout(self, table: CostTable, spec: ArchSpec) -> tuple[list[int], tuple[int, ...]]:
        """(stages the FPN reads, signature: their output sizes)."""
        from fnacli.detection.models import fpn_input_names

        idx = [int(n.removeprefix("stage")) for n in fpn_input_names(spec)]
        geo = table.geometry(spec)
        return idx, tuple(v for i in idx for v in geo.stage_out[i])

    def cost_needs(self, table: CostTable, spec: ArchSpec, map_c: int) -> list[tuple]:
        idx, sig = self.layout(table, spec)
        c = [spec.stages[i].out for i in idx]
        return [("fpn_lateral0", c[0], sig), ("fpn_lateral1", c[1], sig),
                ("fpn_lateral2", c[2], sig), ("fpn_p6", c[2], sig), ("fpn", 0, sig),
                ("retina_head", 0, sig)]

    def cost_space_needs(self, lut: Lut, ref: ArchSpec) -> list[tuple]:
        from fnacli.cost.space import with_out

        idx, _ = self.layout(lut, ref)
        return [need for i in idx for c in lut.space.stages[i].outs
                for need in lut.fixed_needs(with_out(ref, i, c))]

    def cost_group(self, name: str) -> tuple[str, str, int] | None:
        if name.startswith("backbone.fpn.inner_blocks."):
            i = int(name.split(".")[3])
            return f"fpn_lateral{i}", "neck", i
        if name.startswith("backbone.fpn.extra_blocks.p6"):
            return "fpn_p6", "neck", 2  # P6 is a conv on C5
        if name.startswith("backbone.fpn"):
            return "fpn", "neck", -1
        if name.startswith("head."):
            return "retina_head", "head", -1
        return None

    def cost_stub_maps(self, table: CostTable, spec: ArchSpec, needs: list[tuple]
                       ) -> tuple[list[str], dict[int, set[int]], Callable[[tuple], dict]]:
        idx, _ = self.layout(table, spec)
        names = [f"stage{i}" for i in idx]
        per_var = {0: {c for g, c, _ in needs if g == "fpn_lateral0"},
                   1: {c for g, c, _ in needs if g == "fpn_lateral1"},
                   2: {c for g, c, _ in needs if g in ("fpn_lateral2", "fpn_p6")}}
        return names, per_var, lambda sig: {nm: sig[2 * i:2 * i + 2]
                                            for i, nm in enumerate(names)}

    def latency_maps(self, spec: ArchSpec, sig: tuple[int, ...]
                     ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        from fnacli.detection.models import fpn_input_names

        n = fpn_input_names(spec)
        return ({"fpn_lateral0": n[0], "fpn_lateral1": n[1], "fpn_lateral2": n[2],
                 "fpn_p6": n[2]},
                {n[i]: tuple(sig[2 * i:2 * i + 2]) for i in range(3)})

    def latency_entry(self, group: str, c: int, names: Mapping[str, str],
                      delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        # T(ref) goes in the width-free fpn entry; fpn_p6 is in lateral2's, the head in fpn's
        if group.startswith("fpn_lateral"):
            return "neck", delta(names[group], c), 0
        if group == "fpn":
            return "neck", base, 0
        return "neck", 0, 0

    def cost_tables(self, lut: Lut, ref: ArchSpec) -> dict:
        from fnacli.cost.space import with_out

        idx, _ = self.layout(lut, ref)
        t: dict = {"fpn_stages": tuple(idx)}  # a tuple: the LUT turns lists into tensors
        for j, i in enumerate(idx):
            groups = (f"fpn_lateral{j}", "fpn_p6") if j == 2 else (f"fpn_lateral{j}",)
            t[("fpn", j)] = [sum(lut.fixed[f][1] for f in lut.fixed_needs(with_out(ref, i, c))
                                 if f[0] in groups)
                             for c in lut.space.stages[i].outs]
        t["fpn_const"] = sum(lut.fixed[f][1] for f in lut.fixed_needs(ref)
                             if f[0] in ("fpn", "retina_head"))
        return t

    def cost_expected(self, total: torch.Tensor, t: dict,
                      alpha: Callable[[int, int], torch.Tensor],
                      width: Callable[[int], torch.Tensor]) -> torch.Tensor:
        for j, i in enumerate(t["fpn_stages"]):
            total = total + width(i) @ t[("fpn", j)]
        return total + t["fpn_const"]
