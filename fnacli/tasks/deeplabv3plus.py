"""DeepLabv3+ (FNA Table 1's third row): DeepLabv3's encoder (atrous backbone, torchvision's
dense ASPP on the last stage) plus DeepLabv3+'s decoder on the stride-4 map; output stride 16
(``deeplabv3plus``) or 8 (``deeplabv3plus-os8``). Data, loss, metric and recipes are
DeepLabv3's (FNA's segmentation). Parts: ``fnacli.segmentation.deeplabv3plus``.

The output stride is a property of the task (``Task.output_stride``: the backbone, the
supernet and the cost table all read it), so output stride 8 is a second registered task
rather than a setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from fnacli.tasks import register
from fnacli.tasks.deeplabv3 import DeepLabV3Task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fnacli.cost.lut import Lut
    from fnacli.cost.table import CostTable
    from fnacli.spec import ArchSpec

# fixed-part groups of the cost and latency tables
ASPP_GROUP = "aspp"  # ASPP: varies with the last stage's width
LOW_GROUP = "decoder_low"  # the decoder's 1x1 projection: varies with the stride-4 map's width
DECODER_GROUP = "decoder"  # the decoder's 3x3 convs and classifier: constant


@register
class DeepLabV3PlusTask(DeepLabV3Task):
    name = "deeplabv3plus"
    help = "DeepLabv3+ at output stride 16: dense ASPP + decoder on the stride-4 map"
    order = 3
    output_stride: ClassVar[int | None] = 16

    # -- model ---------------------------------------------------------------------------
    def build_model(self, spec: ArchSpec, num_classes: int, size: tuple[int, int],
                    backbone: nn.Module | None = None, **kwargs: Any) -> nn.Module:
        from fnacli.segmentation.deeplabv3plus import build_deeplabv3plus

        return build_deeplabv3plus(spec, num_classes, backbone=backbone,
                                   output_stride=self.output_stride or 16, **kwargs)

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone.body

    def cost_core(self, model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
        from fnacli.segmentation.deeplabv3plus import COST_PARTS, PlusCore

        return PlusCore(model), dict(COST_PARTS)

    # -- cost table: ASPP varies with the last stage's width, the decoder's projection with
    # the stride-4 stage's, the rest of the decoder is constant --------------------------------
    def layout(self, table: CostTable, spec: ArchSpec) -> tuple[int, tuple[int, ...]]:
        """(the stride-4 stage the decoder reads, signature: last and stride-4 map sizes)."""
        from fnacli.segmentation.deeplabv3plus import low_level_name

        low = int(low_level_name(spec).removeprefix("stage"))
        geo = table.geometry(spec)
        return low, (*geo.stage_out[-1], *geo.stage_out[low])

    def cost_needs(self, table: CostTable, spec: ArchSpec, map_c: int) -> list[tuple]:
        low, sig = self.layout(table, spec)
        return [(ASPP_GROUP, map_c, sig), (LOW_GROUP, spec.stages[low].out, sig),
                (DECODER_GROUP, 0, sig)]

    def cost_space_needs(self, lut: Lut, ref: ArchSpec) -> list[tuple]:
        from fnacli.cost.space import with_out

        low, _ = self.layout(lut, ref)
        return [need for c in lut.space.stages[low].outs
                for need in lut.fixed_needs(with_out(ref, low, c))]

    def cost_last_groups(self) -> tuple[str, ...]:
        # the constant decoder: one copy per last-stage width, weighted by β, sums to it
        return (ASPP_GROUP, DECODER_GROUP)

    def cost_group(self, name: str) -> tuple[str, str, int] | None:
        if name.startswith("aspp."):
            return ASPP_GROUP, "neck", 0
        if name.startswith("decoder.project."):
            return LOW_GROUP, "head", 1
        if name.startswith("decoder."):
            return DECODER_GROUP, "head", -1
        return None

    def cost_stub_maps(self, table: CostTable, spec: ArchSpec, needs: list[tuple]
                       ) -> tuple[list[str], dict[int, set[int]], Callable[[tuple], dict]]:
        low, _ = self.layout(table, spec)
        names = [f"stage{len(spec.stages) - 1}", f"stage{low}"]
        per_var = {0: {c for g, c, _ in needs if g == ASPP_GROUP},
                   1: {c for g, c, _ in needs if g == LOW_GROUP}}
        return names, per_var, lambda sig: {names[0]: sig[0:2], names[1]: sig[2:4]}

    def cost_tables(self, lut: Lut, ref: ArchSpec) -> dict:
        from fnacli.cost.space import with_out

        low, _ = self.layout(lut, ref)
        return {"low_stage": low,
                "low": [sum(lut.fixed[f][1] for f in lut.fixed_needs(with_out(ref, low, c))
                            if f[0] == LOW_GROUP)
                        for c in lut.space.stages[low].outs]}

    def cost_expected(self, total: torch.Tensor, t: dict,
                      alpha: Callable[[int, int], torch.Tensor],
                      width: Callable[[int], torch.Tensor]) -> torch.Tensor:
        return total + width(t["low_stage"]) @ t["low"]

    # -- latency table: ASPP + decoder (+ the upsampling to the input) timed on prepared last
    # and stride-4 maps, once per width of each -------------------------------------------------
    def latency_maps(self, spec: ArchSpec, sig: tuple[int, ...]
                     ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        from fnacli.segmentation.deeplabv3plus import low_level_name

        last, low = f"stage{len(spec.stages) - 1}", low_level_name(spec)
        return {ASPP_GROUP: last, LOW_GROUP: low}, {last: tuple(sig[0:2]), low: tuple(sig[2:4])}

    def latency_entry(self, group: str, c: int, names: Mapping[str, str],
                      delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        # T(ref) goes in the ASPP entry; the projection's entry is the change of the stride-4
        # map's width alone (its share of T(ref) is inside the ASPP entry), the constant rest
        # of the decoder is inside T(ref) too
        if group == ASPP_GROUP:
            return "neck", base + delta(names[group], c), 0
        if group == LOW_GROUP:
            return "head", delta(names[group], c), 0
        return "head", 0, 0


@register
class DeepLabV3PlusOS8Task(DeepLabV3PlusTask):
    name = "deeplabv3plus-os8"
    help = "DeepLabv3+ at output stride 8 (ASPP rates 12/24/36)"
    order = 4
    output_stride: ClassVar[int | None] = 8
