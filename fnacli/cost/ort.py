"""Timing modules where they are deployed: exported to ONNX and run in onnxruntime, in float32
or int8 (onnxruntime's own static quantisation, QDQ format).

The seam with the latency tables is :class:`OrtBench`: it takes the same jobs as the eager
``Bench`` (a module and the inputs it is called with at the shape where it occurs) and times
them with the same statistics (warm-up, interleaved rounds, the median and its
distribution-free 95% interval), but what it times is an ``InferenceSession`` of the module's
exported graph. A module is exported in memory at its input shape (``to_onnx``), quantised to
int8 when asked (``quantize_int8``, calibrated on a few inputs of that shape), and run with
its input bound once (``OrtCall``: an IOBinding, so a call times the graph, not a numpy copy).

What a session depends on is recorded with every measurement (:meth:`OrtConfig.describe`):
onnxruntime's version, the execution provider, intra-op threads, the graph optimisation
level and the precision. Only the CPU provider is tested here; CUDA and TensorRT providers are
taken when onnxruntime has them, untested.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fnacli.cost.measure import Bench, MeasureConfig, Timing
from fnacli.cost.runtime import OPSET, PROVIDERS, OrtConfig, require_onnxruntime
from fnacli.errors import UserError


# -- exporting and quantising ------------------------------------------------------------------
class _MapsIn(nn.Module):
    """A neck/head timed on prepared maps (``fnacli.cost.parts._NeckHead``), with the maps as
    graph inputs: as constants, the exporter and onnxruntime would fold the whole computation
    away."""

    def __init__(self, neck_head: nn.Module) -> None:
        super().__init__()
        self.nh = neck_head
        self.names = list(neck_head.body.maps)

    def forward(self, x: torch.Tensor, *maps: torch.Tensor) -> Any:
        self.nh.body.maps = OrderedDict(zip(self.names, maps, strict=True))
        return self.nh(x)


def graph_inputs(module: nn.Module, inputs: Sequence[torch.Tensor]
                 ) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module to export and its inputs: a neck/head on prepared maps takes them as
    inputs (see ``_MapsIn``); anything else as it is."""
    body = getattr(module, "body", None)
    if body is not None and isinstance(getattr(body, "maps", None), dict):
        maps = tuple(t.contiguous() for t in body.maps.values())
        return _MapsIn(module), (*inputs, *maps)
    return module, tuple(inputs)


def to_onnx(module: nn.Module, inputs: Sequence[torch.Tensor], opset: int = OPSET) -> bytes:
    """``module`` (in eval mode) exported at the shapes of ``inputs``, in memory: BatchNorm
    folded into the convolutions, constants folded, as ``fnacli export`` writes it."""
    module = module.eval()
    buf = io.BytesIO()
    names = [f"in{i}" for i in range(len(inputs))]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(inputs), buf, input_names=names,
                              opset_version=opset, dynamo=False, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001 - the exporter's many error types
        raise UserError(f"onnxruntime timing: a module does not export to ONNX opset {opset}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    return buf.getvalue()


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def calibration_feeds(model: bytes, inputs: Sequence[torch.Tensor], n: int, seed: int = 0
                      ) -> list[dict[str, np.ndarray]]:
    """``n`` feeds for the graph's inputs: the given inputs first, then seeded random ones of
    the same shapes and scale (only the ranges matter to a min/max calibration)."""
    import onnx

    names = [i.name for i in onnx.load_from_string(model).graph.input]
    gen = torch.Generator().manual_seed(seed)
    feeds = []
    for k in range(n):
        xs = inputs if k == 0 else [torch.randn(t.shape, generator=gen) * t.std().clamp(min=1e-3)
                                    + t.mean() for t in inputs]
        by_name = {f"in{i}": x for i, x in enumerate(xs)}
        feeds.append({name: by_name[name].detach().float().numpy() if name in by_name
                      else xs[0].detach().float().numpy() for name in names})
    return feeds


def quantize_int8(model: bytes, feeds: list[dict[str, np.ndarray]]) -> bytes:
    """Static int8 quantisation by onnxruntime (QDQ format; activations uint8 per tensor,
    weights int8 per channel), calibrated (min/max) on ``feeds``."""
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser logs through root
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
                pre = src
            quantize_static(str(pre), str(dst), _Calibration(feeds),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True,
                            extra_options={"CalibTensorRangeSymmetric": False})
        return dst.read_bytes()


def session(model: bytes | str | Path, cfg: OrtConfig) -> Any:
    """An InferenceSession with ``cfg``'s threads, optimisation level and provider."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[cfg.opt_level]
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=[PROVIDERS[cfg.provider]])


class OrtCall:
    """A session called on fixed inputs, bound once (IOBinding): a call runs the graph and
    allocates its outputs, as a deployed model's call does, without re-copying the inputs."""

    def __init__(self, sess: Any, inputs: Sequence[torch.Tensor]) -> None:
        self.sess = sess
        by_name = {f"in{i}": x.detach().float().contiguous().numpy() for i, x in
                   enumerate(inputs)}
        self.binding = sess.io_binding()
        self._arrays = []  # the bound buffers must outlive the binding
        for i in sess.get_inputs():
            a = np.ascontiguousarray(by_name.get(i.name, by_name["in0"]))
            self._arrays.append(a)
            self.binding.bind_cpu_input(i.name, a)
        for o in sess.get_outputs():
            self.binding.bind_output(o.name, "cpu")

    def __call__(self, *_: object) -> None:
        self.sess.run_with_iobinding(self.binding)


def compile_module(module: nn.Module, inputs: Sequence[torch.Tensor], cfg: OrtConfig
                   ) -> OrtCall:
    """``module`` at ``inputs``' shapes as a timed onnxruntime call in ``cfg``'s precision."""
    module, xs = graph_inputs(module, inputs)
    model = to_onnx(module, xs, cfg.opset)
    if cfg.precision == "int8":
        model = quantize_int8(model, calibration_feeds(model, xs, cfg.calibration, cfg.seed))
    return OrtCall(session(model, cfg), xs)


# -- timing ------------------------------------------------------------------------------------
class OrtBench(Bench):
    """A ``Bench`` (the eager tables' rounds, samples and statistics, from ``measure``)
    whose jobs run in onnxruntime."""

    def __init__(self, measure: MeasureConfig, cfg: OrtConfig) -> None:
        super().__init__(measure, torch.contiguous_format)
        self.ort = cfg

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple:
        # what is called: the module's graph in a session, its inputs bound once
        return compile_module(module, [x.cpu() for x in inputs], self.ort), ()


def ort_bench(measure: MeasureConfig, cfg: OrtConfig) -> OrtBench:
    return OrtBench(measure, cfg)


def time_modules(items: dict[object, tuple[nn.Module, Sequence[torch.Tensor]]],
                 measure: MeasureConfig, cfg: OrtConfig) -> dict[object, Timing]:
    """{key: Timing} of each (module, inputs) run in onnxruntime, timed interleaved."""
    bench = ort_bench(measure, cfg)
    return bench.run([bench.job(k, m, xs) for k, (m, xs) in items.items()])


__all__ = ["OrtBench", "OrtCall", "OrtConfig", "compile_module", "ort_bench", "quantize_int8",
           "session", "time_modules", "to_onnx"]
