"""RetinaNet (as in FNA): torchvision's ``RetinaNet`` on an FPN (256 channels) over the last
stage outputs at strides 8/16/32, P6 a 3x3 stride-2 conv on C5 (not P5), P7 from P6, 9
anchors, 4-conv heads, sigmoid focal loss over ``num_classes`` (labels 0..num_classes-1).
The backbone's 1x1 head conv is not used. Parts: ``fnacli.detection.models``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnacli.tasks import register
from fnacli.tasks.base import HeadPiece, Recipe, SearchDefaults
from fnacli.tasks.detection import DetectionTask

if TYPE_CHECKING:
    from torch import nn

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
    # step and one α/β step; SGD 0.9 wd 1e-4 warmed up over 500 iterations from 0 to 0.02 at
    # batch 8, x0.1 at 8 and 11; λ 0.02 τ 10 γ 5; no random flip during search; MAdds at
    # 1088x800.
    search_defaults = SearchDefaults(epochs=14, warmup_epochs=8, arch_every=1, lam=0.02,
                                     tau=10.0, milestones=(8 / 14, 11 / 14), gamma=5.0,
                                     optimizer="sgd", lr=0.02, base_batch=8, batch_size=8,
                                     momentum=0.9, weight_decay=1e-4, warmup_iters=500,
                                     clip_grad=35.0, augment="none", cost_size=(1088, 800),
                                     warmup_ratio=0.0)
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

    # -- the network beyond the backbone: each FPN lateral reads one stage's output (P6 is a
    # conv on C5), the rest of the FPN and the heads read the FPN's 256 channels ----------------
    head_pieces = (
        HeadPiece("fpn", "neck", ("backbone.fpn",)),
        HeadPiece("fpn_lateral0", "neck", ("backbone.fpn.inner_blocks.0",), reads=0),
        HeadPiece("fpn_lateral1", "neck", ("backbone.fpn.inner_blocks.1",), reads=1),
        HeadPiece("fpn_lateral2", "neck", ("backbone.fpn.inner_blocks.2",), reads=2),
        HeadPiece("fpn_p6", "neck", ("backbone.fpn.extra_blocks.p6",), reads=2),
        HeadPiece("retina_head", "head", ("head",)),
    )

    def head_inputs(self, spec: ArchSpec) -> tuple[str, ...]:
        from fnacli.detection.models import fpn_input_names

        return tuple(fpn_input_names(spec))
