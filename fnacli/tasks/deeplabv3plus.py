"""DeepLabv3+ (FNA Table 1's third row): DeepLabv3's encoder (atrous backbone, torchvision's
dense ASPP on the last stage) plus DeepLabv3+'s decoder on the stride-4 map; output stride 16
(``deeplabv3plus``) or 8 (``deeplabv3plus-os8``). Data, loss, metric and recipes are
DeepLabv3's (FNA's segmentation). Parts: ``fnacli.segmentation.deeplabv3plus``.

The output stride is a property of the task (``Task.output_stride``: the backbone, the
supernet and the cost table all read it), so output stride 8 is a second registered task
rather than a setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from fnacli.tasks import register
from fnacli.tasks.base import HeadPiece
from fnacli.tasks.deeplabv3 import DeepLabV3Task

if TYPE_CHECKING:
    from torch import nn

    from fnacli.spec import ArchSpec

# the pieces of the network beyond the backbone
ASPP_GROUP = "aspp"  # the dense ASPP on the last stage
LOW_GROUP = "decoder_low"  # the decoder's 1x1 projection of the stride-4 map
DECODER_GROUP = "decoder"  # the decoder's 3x3 convs and classifier


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

    def core_of(self, model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
        from fnacli.segmentation.deeplabv3plus import COST_PARTS, PlusCore

        return PlusCore(model), dict(COST_PARTS)

    # -- the network beyond the backbone: ASPP on the last stage, the decoder's projection
    # of the stride-4 map, the rest of the decoder on 256 + 48 channels --------------------------
    head_pieces = (
        HeadPiece(ASPP_GROUP, "neck", ("aspp",), reads=0),
        HeadPiece(LOW_GROUP, "head", ("decoder.project",), reads=1),
        HeadPiece(DECODER_GROUP, "head", ("decoder",)),
    )

    def head_inputs(self, spec: ArchSpec) -> tuple[str, ...]:
        from fnacli.segmentation.deeplabv3plus import low_level_name

        return (f"stage{len(spec.stages) - 1}", low_level_name(spec))


@register
class DeepLabV3PlusOS8Task(DeepLabV3PlusTask):
    name = "deeplabv3plus-os8"
    help = "DeepLabv3+ at output stride 8 (ASPP rates 12/24/36)"
    order = 4
    output_stride: ClassVar[int | None] = 8
