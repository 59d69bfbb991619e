"""Semantic segmentation: DeepLabv3 around a spec'd backbone, Cityscapes-layout and
COCO-mask data, the confusion-matrix metric (mIoU) and a synthetic dataset."""
