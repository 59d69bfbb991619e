"""Detectors around spec'ed backbones, their data and evaluation.

Kept import-light on purpose: importing ``fnacli.detection`` does not import torch; use the
submodules (``fnacli.detection.models``, ...) directly.
"""
