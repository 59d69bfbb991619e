"""Detectors around spec'ed backbones, their data and evaluation.

Kept import-light on purpose: importing ``fnacli.detection`` does not import torch; use the
submodules (``fnacli.detection.models``, ...) directly.
"""

# COCOeval's bbox summary, in its order (``fnacli.detection.evaluate``), and long names
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_LABELS = ("AP @[IoU=0.50:0.95]", "AP @[IoU=0.50]", "AP @[IoU=0.75]", "AP small",
               "AP medium", "AP large", "AR maxDets=1", "AR maxDets=10", "AR maxDets=100",
               "AR small", "AR medium", "AR large")
