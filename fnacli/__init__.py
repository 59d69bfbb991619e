"""fnacli: adapt MobileNetV2 checkpoints into detection backbones (FNA/FNA++, DetNAS).

The library is importable without the CLI. The pipeline's steps (``fnacli.expand``,
``fnacli.search``, ``fnacli.derive``, ``fnacli.remap``, ``fnacli.finetune``,
``fnacli.evaluate``, ``fnacli.profile``, ``fnacli.measure_latency``, ``fnacli.export``) and
main types are attributes of this package, imported on first use (module ``__getattr__``),
so ``import fnacli`` stays cheap (no torch).
Every step takes its config dataclass (``fnacli.RemapConfig(...)``) or the config's fields;
docs/api.md runs the whole pipeline this way.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

from fnacli.errors import UserError  # noqa: E402

# public name -> module that defines it
_LAZY = {
    **dict.fromkeys(("expand", "ExpandConfig", "ExpandResult"), "fnacli.pipeline.expand"),
    **dict.fromkeys(("search", "SearchOptions", "SearchResult"), "fnacli.pipeline.search"),
    **dict.fromkeys(("search_differentiable", "DifferentiableSearchConfig"),
                    "fnacli.pipeline.search_differentiable"),
    **dict.fromkeys(("search_oneshot", "OneShotSearchConfig"), "fnacli.pipeline.search_oneshot"),
    **dict.fromkeys(("derive", "DeriveConfig", "DeriveResult"), "fnacli.pipeline.derive"),
    **dict.fromkeys(("remap", "RemapConfig", "RemapResult"), "fnacli.pipeline.remap"),
    **dict.fromkeys(("finetune", "FinetuneConfig", "FinetuneResult"),
                    "fnacli.pipeline.finetune"),
    **dict.fromkeys(("evaluate", "EvaluateConfig", "EvaluateResult"),
                    "fnacli.pipeline.evaluate"),
    **dict.fromkeys(("compare", "CompareConfig", "CompareResult"), "fnacli.pipeline.compare"),
    **dict.fromkeys(("profile", "ProfileConfig", "ProfileResult", "build_table", "TableConfig",
                     "TableResult", "load_specs"), "fnacli.pipeline.profile"),
    **dict.fromkeys(("measure_latency", "LatencyConfig", "LatencyResult"),
                    "fnacli.pipeline.latency"),
    **dict.fromkeys(("export", "ExportConfig"), "fnacli.pipeline.export"),
    **dict.fromkeys(("sample", "SampleConfig", "SampleResult"), "fnacli.pipeline.sample"),
    **dict.fromkeys(("Budget", "Window"), "fnacli.budget"),
    "ExportResult": "fnacli.export",
    **dict.fromkeys(("ArchSpec", "SpaceSpec", "load_arch", "load_space"), "fnacli.spec"),
    **dict.fromkeys(("Task", "get_task", "task_names"), "fnacli.tasks"),
    "load_detector": "fnacli.model_checkpoint",
    "read_checkpoint": "fnacli.checkpoint",
    "Backbone": "fnacli.nn.backbone",
    "build_detector": "fnacli.tasks",
}

__all__ = ["UserError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        if name == "search":  # its signature: both strategies' configs
            importlib.import_module(_LAZY[name]).document_search()
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'fnacli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """Three steps share their name with a submodule (``fnacli.search``, the search engines;
    ``fnacli.remap``, the remapping rules; ``fnacli.export``, the exporters). Importing such
    a submodule would set the package attribute to the module; the step keeps the name
    instead (``from fnacli.search import arch`` still works: it reads ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
