"""SSDLite (MobileNetV2 SSDLite as in FNA): torchvision's ``SSD`` with separable heads on
two backbone taps (the expansion output of the first stride-32 layer and the 1x1 head conv)
plus four extra blocks (512/256/256/128), 4/6/6/6/4/4 default boxes per location, softmax
over ``num_classes + 1`` (background is label 0). Parts: ``fnacli.detection.models``."""

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
class SSDLite(DetectionTask):
    name = "ssdlite"
    help = "SSDLite on the stride-16 expansion tap and the 1x1 head conv (FNA's SSDLite)"
    order = 0
    uses_head_conv = True
    label_offset = 1
    default_size = (320, 320)
    profile_size = (320, 320)
    default_augment = "ssd"
    min_train_batch = 2  # its extra layers apply BatchNorm to 1x1 maps
    # FNA's text: RMSprop, lr 0.2 per 512 images, 60 epochs with drops at 36/50/56 (the
    # released config's 300 epochs are 60 over a 5x repeated dataset; docs/training.md).
    recipe = Recipe(optimizer="rmsprop", lr=0.2, base_batch=512, batch_size=32, momentum=0.9,
                    weight_decay=4e-5, schedule="step", milestones=(36 / 60, 50 / 60, 56 / 60),
                    warmup_iters=500, epochs=60, clip_grad=None, size=(320, 320))
    # FNA's appendix: 24 epochs, α/β from epoch 12, one α/β step per weight step, RMSProp wd
    # 4e-5 warmed up over 500 iterations to 0.03 (the batch is not given: we take 32), x0.1
    # at 16 and 22, λ 0.2 τ 10 γ 10. docs/search.md lists where the released config differs.
    search_defaults = SearchDefaults(epochs=24, warmup_epochs=12, arch_every=1, lam=0.2,
                                     tau=10.0, milestones=(16 / 24, 22 / 24), gamma=10.0,
                                     optimizer="rmsprop", lr=0.03, base_batch=32,
                                     batch_size=32, weight_decay=4e-5, warmup_iters=500,
                                     clip_grad=None, augment="ssd")
    # One-shot supernet training: the 60-epoch fine-tuning recipe.
    oneshot_epochs = 60

    def build_model(self, spec: ArchSpec, num_classes: int, size: tuple[int, int],
                    backbone: nn.Module | None = None, **kwargs: Any) -> nn.Module:
        from torch import nn
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
        from torchvision.models.detection.ssd import SSD
        from torchvision.models.detection.ssdlite import SSDLiteHead

        from fnacli.detection.models import IMAGE_MEAN, IMAGE_STD, SSDLITE_ASPECTS, SSDLiteFeatures
        from fnacli.nn.backbone import Backbone

        body = backbone if backbone is not None else Backbone(spec, with_head=True)
        feats = SSDLiteFeatures(body)
        anchors = DefaultBoxGenerator([list(a) for a in SSDLITE_ASPECTS], min_ratio=0.2,
                                      max_ratio=0.95)
        head = SSDLiteHead(feats.out_channels, anchors.num_anchors_per_location(),
                           num_classes + 1, nn.BatchNorm2d)
        # torchvision's SSDLite inference defaults
        opts = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300,
                "topk_candidates": 300, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD,
                **kwargs}
        return SSD(feats, anchors, tuple(size), num_classes + 1, head=head, **opts)

    # -- cost table: the tap's prediction head varies with the tap's (expansion) width, the
    # extra blocks and the other heads with the last map's width ---------------------------
    def layout(self, table: CostTable, spec: ArchSpec) -> tuple[int, tuple[int, ...]]:
        """(stage of the tap layer, signature: tap input and last map sizes)."""
        from fnacli.detection.models import ssdlite_tap_names
        from fnacli.nn.backbone import ssd_tap_layer

        tap = ssd_tap_layer(spec)
        if tap is None:
            ssdlite_tap_names({})  # raises the detector's own message
        geo = table.geometry(spec)
        return tap[0], (*geo.stage_in[tap[0]], *geo.stage_out[-1])

    def cost_needs(self, table: CostTable, spec: ArchSpec, map_c: int) -> list[tuple]:
        s, sig = self.layout(table, spec)
        cin = spec.stages[s - 1].out if s else spec.stem_out
        tap = cin * spec.stages[s].ops[0].expand
        return [("ssd_tap_pred", tap, sig), ("ssd_extra", map_c, sig), ("ssd_pred", map_c, sig)]

    def cost_space_needs(self, lut: Lut, ref: ArchSpec) -> list[tuple]:
        from fnacli.cost.space import layer_ops, stage_in_outs

        s, _ = self.layout(lut, ref)
        return [need for cin in stage_in_outs(lut.space, s) for op in layer_ops(lut.space, s, 0)
                for need in lut.fixed_needs(_tap_arch(ref, s, cin, op))]

    def cost_last_groups(self) -> tuple[str, ...]:
        return ("ssd_extra", "ssd_pred")

    def cost_group(self, name: str) -> tuple[str, str, int] | None:
        if name.startswith("head."):
            return ("ssd_tap_pred", "head", 0) if ".module_list.0." in name + "." else \
                ("ssd_pred", "head", 1)
        if name.startswith("backbone.extra"):
            return "ssd_extra", "neck", 1
        return None

    def cost_stub_maps(self, table: CostTable, spec: ArchSpec, needs: list[tuple]
                       ) -> tuple[list[str], dict[int, set[int]], Callable[[tuple], dict]]:
        from fnacli.nn.backbone import SSD_TAP

        names = [SSD_TAP, "head"]
        per_var = {0: {c for g, c, _ in needs if g == "ssd_tap_pred"},
                   1: {c for g, c, _ in needs if g in ("ssd_extra", "ssd_pred")}}
        return names, per_var, lambda sig: {names[0]: sig[0:2], names[1]: sig[2:4]}

    def latency_maps(self, spec: ArchSpec, sig: tuple[int, ...]
                     ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        from fnacli.nn.backbone import SSD_TAP, feature_channels

        last = next(reversed(feature_channels(spec, with_head=True)))
        return ({"ssd_tap_pred": SSD_TAP, "ssd_extra": last, "ssd_pred": last},
                {SSD_TAP: tuple(sig[0:2]), last: tuple(sig[2:4])})

    def latency_entry(self, group: str, c: int, names: Mapping[str, str],
                      delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        # T(ref) goes in ssd_extra; ssd_pred is inside the ssd_extra measurement
        if group == "ssd_tap_pred":
            return "head", delta(names[group], c), 0
        if group == "ssd_extra":
            return "neck", base + delta(names[group], c), 0
        return "head", 0, 0

    def cost_tables(self, lut: Lut, ref: ArchSpec) -> dict:
        from fnacli.cost.space import layer_ops, stage_in_outs

        s, _ = self.layout(lut, ref)
        return {"tap_stage": s,
                "tap": [[lut.fixed[self._tap_need(lut, ref, s, a, o)][1]
                         for a in stage_in_outs(lut.space, s)]
                        for o in layer_ops(lut.space, s, 0)]}

    def _tap_need(self, lut: Lut, ref: ArchSpec, s: int, cin: int, op: str) -> tuple:
        return next(f for f in lut.fixed_needs(_tap_arch(ref, s, cin, op))
                    if f[0] == "ssd_tap_pred")

    def cost_expected(self, total: torch.Tensor, t: dict,
                      alpha: Callable[[int, int], torch.Tensor],
                      width: Callable[[int], torch.Tensor]) -> torch.Tensor:
        import torch

        s = t["tap_stage"]
        return total + torch.einsum("o,i,oi->", alpha(s, 0), width(s - 1), t["tap"])


def _tap_arch(ref: ArchSpec, s: int, cin: int, op: str) -> ArchSpec:
    """``ref`` with the tap layer's op and input width set."""
    from fnacli.cost.space import with_op0, with_out

    return with_op0(with_out(ref, s - 1, cin) if s else ref, s, op)
