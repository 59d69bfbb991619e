"""Which runtime a latency table is timed in, and onnxruntime's settings: precision, threads,
graph optimisation level, execution provider (what ``fnacli.cost.measure`` records and
``fnacli.cost.ort`` runs with). Importing it imports neither torch nor onnxruntime."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fnacli.errors import UserError

RUNTIMES = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
OPT_LEVELS = ("disable", "basic", "extended", "all")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
OPSET = 17
CALIBRATION_INPUTS = 4  # per quantised graph: enough for min/max ranges of random inputs


@dataclass(frozen=True)
class OrtConfig:
    """How graphs are run: precision, threads, optimisation level, execution provider."""

    precision: str = "fp32"
    threads: int = 1
    opt_level: str = "all"
    provider: str = "cpu"
    opset: int = OPSET
    calibration: int = CALIBRATION_INPUTS
    seed: int = 0

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision: expected fp32 or int8, got {self.precision!r}")
        if self.opt_level not in OPT_LEVELS:
            raise UserError(f"--opt-level: expected one of {', '.join(OPT_LEVELS)}, got "
                            f"{self.opt_level!r}")
        if self.provider not in PROVIDERS:
            raise UserError(f"--provider: expected one of {', '.join(PROVIDERS)}, got "
                            f"{self.provider!r}")
        if self.threads < 1:
            raise UserError(f"--threads: expected at least 1, got {self.threads}")
        ort = require_onnxruntime()
        if PROVIDERS[self.provider] not in ort.get_available_providers():
            raise UserError(f"--provider {self.provider}: onnxruntime here has only "
                            f"{', '.join(ort.get_available_providers())}")

    def describe(self) -> dict:
        """What a measurement in this runtime is recorded with."""
        ort = require_onnxruntime()
        return {"runtime": "onnxruntime", "onnxruntime": ort.__version__,
                "precision": self.precision, "threads": self.threads,
                "provider": PROVIDERS[self.provider], "opt_level": self.opt_level,
                "opset": self.opset,
                "quantisation": "static QDQ, activations uint8 per tensor, weights int8 per "
                                f"channel, {self.calibration} calibration inputs"
                                if self.precision == "int8" else None}

    def to_dict(self) -> dict:
        return asdict(self)


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'fnacli[export]'") from None
    return onnxruntime
