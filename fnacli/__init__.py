"""fnacli: adapt MobileNetV2 checkpoints into detection backbones (FNA/FNA++, DetNAS).

The library is importable without the CLI; heavy modules (torch) are imported lazily by
the submodules that need them, so ``import fnacli`` stays cheap.
"""

__version__ = "0.1.0"

from fnacli.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
