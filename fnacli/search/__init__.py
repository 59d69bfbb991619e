"""Architecture search over a supernet.

- ``fnacli.nn.masks``: channel-mask arithmetic (FBNetV2 overlapping, Jung et al.
  non-overlapping).
- ``fnacli.search.arch``: the architecture parameters α/β (names, initialisation, softmax with
  the minimum-depth rule), deriving the argmax architecture and the exact top-K.
- ``fnacli.search.supernet_io``: supernet checkpoints (``fnacli expand``) and reading them back.
- ``fnacli.search.differentiable``: FNA's alternating weight / α-β optimisation on a detection
  task with a MAdds cost term.
- ``fnacli.search.oneshot`` / ``evolution`` / ``bn_recal``: DetNAS's one-shot search.

Kept import-light: importing ``fnacli.search`` does not import torch.
"""
