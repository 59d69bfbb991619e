"""Networks built from specs: MBConv blocks, the backbone, the classifier and the supernet."""

from fnacli.nn.backbone import Backbone, Classifier
from fnacli.nn.blocks import ConvBN, MBConv

__all__ = ["Backbone", "Classifier", "ConvBN", "MBConv"]
