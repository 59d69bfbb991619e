"""Checkpoints: fnacli's safetensors files and MobileNetV2 seeds from anywhere.

fnacli writes one format: safetensors whose metadata says what the file is
(``fnacli_format``, ``kind``, ``fnacli_version``) and carries JSON values (the spec, the
space, …), so every command can read any checkpoint without extra flags. ``format`` is
``"pt"``, what Hugging Face tools expect of a PyTorch safetensors file; files of fnacli 0.1
before that change kept the schema tag under ``format`` itself and still read.

Seeds ("any MobileNetV2 checkpoint") are read into Backbone-keyed tensors plus the spec
inferred from their shapes. Pickles (``.pth``/``.pt``) are only ever opened with
``torch.load(weights_only=True)``: a pickle that wants to run code is refused, not run.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fnacli import __version__
from fnacli.errors import UserError
from fnacli.io import atomic_path, check_writable
from fnacli.spec import MBV2_SETTING, ArchSpec, Op, SpaceSpec, Stage

FORMAT = "fnacli/checkpoint@1"
FORMAT_KEY = "fnacli_format"  # fnacli's schema tag; "format" is Hugging Face's ("pt")
KINDS = ("backbone", "supernet", "detector", "segmenter", "searched")
_RESERVED = ("format", FORMAT_KEY, "kind", "fnacli_version")

# Strides are not in any tensor's shape; these are MobileNetV2's (stem 2, then per stage).
MBV2_STRIDES = tuple(s for *_, s in MBV2_SETTING)
MBV2_DEPTHS = tuple(n for _, _, n, _ in MBV2_SETTING)
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class Checkpoint:
    """An fnacli checkpoint as read from disk."""

    tensors: dict[str, torch.Tensor]
    kind: str
    meta: dict
    spec: ArchSpec | None = None
    space: SpaceSpec | None = None
    version: str = field(default="")


# -- fnacli safetensors ---------------------------------------------------------------------
def count_parameters(tensors: dict[str, torch.Tensor]) -> int:
    """Learnable parameters in a state dict (BN running statistics are buffers, not params)."""
    return sum(t.numel() for k, t in tensors.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], kind: str, meta: dict,
                    force: bool = False) -> None:
    """Write ``tensors`` as safetensors with fnacli metadata, atomically.

    Every ``meta`` value is stored JSON-encoded under its own metadata key, so tools that
    only list safetensors metadata still show the spec.
    """
    from safetensors.torch import save

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    clash = [k for k in meta if k in _RESERVED]
    if clash:
        raise ValueError(f"meta key {clash[0]!r} is reserved")
    metadata = {"format": "pt", FORMAT_KEY: FORMAT, "kind": kind, "fnacli_version": __version__}
    metadata.update({k: json.dumps(v, sort_keys=False) for k, v in meta.items()})
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing storage (tied weights, views of one buffer):
        # give each its own
        ptr = v.untyped_storage().data_ptr()
        if v.numel() and ptr in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    path = check_writable(path, force)
    data = _canonical_header(save(out, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def schema_of(metadata: dict[str, str]) -> str | None:
    """fnacli's schema tag of a safetensors file's metadata (None: not an fnacli file).
    Files written before ``format`` became ``"pt"`` carry the tag under ``format``."""
    if FORMAT_KEY in metadata:
        return metadata[FORMAT_KEY]
    fmt = metadata.get("format")
    return fmt if fmt is not None and fmt.startswith("fnacli/") else None


def _canonical_header(data: bytes) -> bytes:
    """Rewrite a safetensors header in a fixed key order (metadata keys sorted, tensors by
    offset), so the same tensors and metadata always give the same bytes: safetensors'
    writer orders them through a randomly seeded hash map. Only the order of the JSON
    members changes, never its length, so the data offsets stay valid."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
    ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # the writer used another JSON style: keep its bytes as they are
        return data
    return data[:8] + text.ljust(n, b" ") + data[8 + n:]


def _sniff(path: Path) -> str:
    """What a file looks like from its first bytes: safetensors, pickle, json, empty or other."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "pickle"  # torch.save's zip archive
    if len(head) >= 9:  # safetensors: u64 little-endian header size, then the JSON header
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < n < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"  # a legacy torch.save or raw pickle stream (protocol 2+)
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "other"


def _not_readable(path: Path, kind: str) -> UserError:
    if kind == "empty":
        return UserError(f"{path}: empty file; expected a checkpoint")
    if kind == "json":
        return UserError(f"{path}: a JSON file, not a checkpoint (a spec goes to --spec); expected "
                         "a MobileNetV2 state dict (.pth/.pt) or an fnacli .safetensors")
    return UserError(f"{path}: not a checkpoint (neither safetensors nor a PyTorch file); expected "
                     "a MobileNetV2 state dict (.pth/.pt) or an fnacli .safetensors")


# tensors a checkpoint may hold: floating weights (converted to float32 when read), and
# BatchNorm's integer step counters
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                "F64": torch.float64}
_COUNTERS = ("num_batches_tracked",)
Header = dict[str, tuple[str, tuple[int, ...]]]  # name -> (safetensors dtype, shape)


def read_header(path: Path) -> tuple[Header, dict[str, str]]:
    """A safetensors file's tensor names, dtypes and shapes and its metadata, from the header
    alone (no tensor is read)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
        if not 0 < n <= size - 8:
            raise UserError(f"{path}: damaged or truncated safetensors file (header of {n} "
                            f"bytes in a file of {size})")
        raw = f.read(n)
    try:
        doc = json.loads(raw)
        metadata = doc.pop("__metadata__", None) or {}
        header = {k: (str(v["dtype"]), tuple(int(d) for d in v["shape"])) for k, v in doc.items()}
    except (ValueError, RecursionError, TypeError, KeyError, AttributeError):
        raise UserError(f"{path}: damaged or truncated safetensors file (its header is not "
                        "valid)") from None
    if not all(isinstance(v, str) for v in metadata.values()):
        raise UserError(f"{path}: damaged safetensors file (metadata values must be text)")
    return header, metadata


def check_dtypes(header: Header, name: str | Path) -> None:
    """Weights must be floating point (counters integers): an int8 or complex tensor would be
    cast silently into a float parameter."""
    for key, (dtype, _) in header.items():
        if dtype in FLOAT_DTYPES or (key.endswith(_COUNTERS) and dtype in ("I64", "I32")):
            continue
        raise UserError(f"{name}: tensor {key} is {dtype.lower()}; expected floating-point "
                        "weights (float16, bfloat16, float32 or float64)")


def check_shapes_expected(header: Header, expected: dict[str, tuple[int, ...]],
                          name: str | Path) -> None:
    """Names and shapes as the model the metadata describes expects, before any tensor is
    read (a huge stray tensor is refused, not loaded)."""
    for key, (_, shape) in header.items():
        if key not in expected:
            raise UserError(f"{name}: unexpected tensor {key} (shape {list(shape)}) for the "
                            "model its metadata describes")
        if shape != expected[key]:
            raise UserError(f"{name}: tensor {key} has shape {list(shape)}, expected "
                            f"{list(expected[key])} for the model its metadata describes")
    missing = [k for k in expected if k not in header and not k.endswith(_COUNTERS)]
    if missing:
        raise UserError(f"{name}: tensor {missing[0]} is missing for the model its metadata "
                        "describes")


def check_weights(tensors: dict[str, torch.Tensor], name: str | Path) -> dict[str, torch.Tensor]:
    """Floating tensors as float32, integer counters as they are; a tensor of another dtype
    or with a NaN or infinite value is a UserError naming ``name`` and the tensor."""
    out = {}
    for key, t in tensors.items():
        if key.endswith(_COUNTERS) and not t.is_floating_point() and not t.is_complex():
            out[key] = t
            continue
        if t.dtype not in FLOAT_DTYPES.values():
            what = str(t.dtype).removeprefix("torch.")
            raise UserError(f"{name}: tensor {key} is {what}; expected floating-point weights "
                            "(float16, bfloat16, float32 or float64)")
        if not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise UserError(f"{name}: tensor {key} holds {bad} values; the weights are damaged "
                            "(a diverged run saved them, or the file was edited)")
        out[key] = t.float()
    return out


def _read_safetensors(path: Path, expect: Callable[[dict[str, str]], dict | None] | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (checked: ``check_weights``) and metadata. ``expect(metadata)`` may give the
    names and shapes the file must hold: checked from the header before any tensor is read."""
    from safetensors import safe_open

    header, _ = read_header(path)
    check_dtypes(header, path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            expected = expect(metadata) if expect is not None else None
            if expected:
                check_shapes_expected(header, expected, path)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except UserError:
        raise
    except Exception as e:  # safetensors raises its own error type for damaged files
        raise UserError(f"{path}: damaged or truncated safetensors file ({_short(e)})") from None
    return check_weights(tensors, path), metadata


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _decode_meta(path: Path, metadata: dict[str, str]) -> dict:
    meta = {}
    for k, v in metadata.items():
        if k in _RESERVED:
            continue
        try:
            meta[k] = json.loads(v)
        except (ValueError, RecursionError):
            raise UserError(f"{path}: metadata entry {k!r} is not valid JSON") from None
    return meta


def read_checkpoint(path: str | Path, model: ModelShapes | None = None) -> Checkpoint:
    """Read an fnacli checkpoint; a UserError for anything else (saying what it is). Names
    and shapes are checked from the header first where the metadata says what they must be
    (``expected_shapes``; ``model`` builds the model of a non-backbone kind)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    kind = _sniff(path)
    if kind == "pickle":
        raise UserError(f"{path}: a PyTorch pickle, not an fnacli checkpoint; expected a "
                        ".safetensors written by fnacli (seeds go to 'remap'/'expand' as SEED)")
    if kind != "safetensors":
        raise _not_readable(path, kind)
    return _parse_checkpoint(path, *_read_safetensors(
        path, lambda m: expected_shapes(path, m, model)))


ModelShapes = Callable[[Checkpoint, Path], "torch.nn.Module | None"]


def expected_shapes(path: Path, metadata: dict[str, str], model: ModelShapes | None = None
                    ) -> dict[str, tuple[int, ...]] | None:
    """The names and shapes an fnacli checkpoint of this metadata holds, where the metadata
    alone says: a backbone here; other kinds through ``model(checkpoint, path)``, which builds
    the model they describe (``fnacli.model_checkpoint`` does for detectors and
    segmenters, which this module cannot import: they import it). None: unknown."""
    if schema_of(metadata) != FORMAT or metadata.get("kind") not in KINDS:
        return None  # _parse_checkpoint says what is wrong
    ckpt = Checkpoint({}, metadata["kind"], {}, None)
    meta = _decode_meta(path, metadata)
    if "spec" not in meta:
        return None
    ckpt.meta, ckpt.spec = meta, ArchSpec.from_dict(meta["spec"], f"{path}: metadata spec")
    with torch.device("meta"):  # shapes only
        if ckpt.kind == "backbone":
            from fnacli.nn.backbone import Backbone

            ref = Backbone(ckpt.spec)
        else:
            ref = model(ckpt, path) if model is not None else None
    return None if ref is None else {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def _parse_checkpoint(path: Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> Checkpoint:
    fmt = schema_of(metadata)
    if fmt is None:
        raise UserError(f"{path}: a safetensors file without fnacli metadata; expected a "
                        f"checkpoint written by fnacli (format {FORMAT!r})")
    if fmt != FORMAT:
        raise UserError(f"{path}: checkpoint format {fmt!r} is not supported by fnacli "
                        f"{__version__} (expected {FORMAT!r})")
    ckind = metadata.get("kind")
    if ckind not in KINDS:
        raise UserError(f"{path}: unknown checkpoint kind {ckind!r} (expected one of "
                        f"{', '.join(KINDS)})")
    meta = _decode_meta(path, metadata)
    spec = ArchSpec.from_dict(meta["spec"], f"{path}: metadata spec") if "spec" in meta else None
    space = (SpaceSpec.from_dict(meta["space"], f"{path}: metadata space")
             if "space" in meta else None)
    return Checkpoint(tensors, ckind, meta, spec, space, metadata.get("fnacli_version", ""))


# -- seeds ----------------------------------------------------------------------------------
def load_seed(arg: str) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """Any MobileNetV2 checkpoint as Backbone-keyed tensors plus its (inferred) spec.

    ``arg`` is a file (torchvision / timm state dict, wrapped or prefixed, raw or fnacli
    safetensors), ``torchvision:WEIGHTS`` (e.g. ``torchvision:IMAGENET1K_V1``) or
    ``timm:NAME`` (e.g. ``timm:mobilenetv2_100``, ``timm:mobilenetv2_050.lamb_in1k``).
    """
    if arg.startswith("torchvision:"):
        return from_state_dict(_torchvision_weights(arg), arg)
    if arg.startswith("timm:"):
        return from_state_dict(_timm_weights(arg), arg)
    path = Path(arg)
    if not path.is_file():
        raise UserError(f"{arg}: no such file")
    kind = _sniff(path)
    if kind == "pickle":
        return from_state_dict(_state_dict_of(_torch_load(path), arg), arg)
    if kind != "safetensors":
        raise _not_readable(path, kind)
    tensors, metadata = _read_safetensors(path)
    if schema_of(metadata) != FORMAT:
        return from_state_dict(tensors, arg)  # a plain safetensors state dict (e.g. timm's)
    ckpt = _parse_checkpoint(path, tensors, metadata)
    if ckpt.kind not in ("backbone", "detector", "segmenter"):
        raise UserError(f"{arg}: a {ckpt.kind} checkpoint; a seed must be a backbone "
                        "(a MobileNetV2 state dict or an fnacli backbone/detector/segmenter)")
    return from_state_dict(ckpt.tensors, arg, ckpt.spec)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f"it references {m.group(1)}" if m else "it holds more than tensors"
            raise UserError(f"{path}: refused to load: {what}, which torch.load(weights_only=True) "
                            "does not allow (only state dicts of tensors are read; save "
                            "model.state_dict())") from None
        raise UserError(f"{path}: damaged or not a PyTorch checkpoint ({_short(e)}); expected "
                        "a MobileNetV2 state dict saved with torch.save") from None


def _torchvision_weights(arg: str) -> dict[str, torch.Tensor]:
    from torchvision.models import MobileNet_V2_Weights

    name = arg.split(":", 1)[1].removeprefix("MobileNet_V2_Weights.")
    known = ["DEFAULT", *(w.name for w in MobileNet_V2_Weights)]
    if name not in known:
        raise UserError(f"{arg}: unknown torchvision MobileNetV2 weights {name!r} "
                        f"(known: {', '.join(known)})")
    weights = MobileNet_V2_Weights[name]
    try:
        # torch.hub announces downloads on stdout, which carries our results: keep it clean
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return weights.get_state_dict(progress=False)
    except Exception as e:  # no network, proxy, bad hash, …
        raise UserError(f"{arg}: could not fetch torchvision's weights ({_short(e)}); download "
                        f"{weights.url} elsewhere and pass the file instead") from None


def create_timm_model(name: str) -> torch.nn.Module:
    """timm's own constructor with its pretrained loading (the Hugging Face hub, cached)."""
    import timm

    return timm.create_model(name, pretrained=True)


def _timm_weights(arg: str) -> dict[str, torch.Tensor]:
    name = arg.split(":", 1)[1]
    try:
        import timm
    except ImportError:
        raise UserError(f"{arg}: timm is not installed (pip install 'fnacli[timm]' or timm); "
                        "or pass a saved state dict instead") from None
    known = timm.list_models("mobilenetv2*")
    if name.split(".", 1)[0] not in known:
        raise UserError(f"{arg}: not a timm MobileNetV2 (known: {', '.join(known)})")
    with_weights = timm.list_models(name.split(".", 1)[0], pretrained=True)
    if not with_weights:
        have = ", ".join(timm.list_models("mobilenetv2*", pretrained=True))
        raise UserError(f"{arg}: timm has no pretrained weights for {name} (it has: {have})")
    try:
        cfg = timm.models.get_pretrained_cfg(name) or {}
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    except Exception:  # noqa: BLE001 - only used to say where the weights live
        cfg = {}
    hub = cfg.get("hf_hub_id")
    where = f"https://huggingface.co/{hub}" if hub else (cfg.get("url") or "timm's weights")
    try:
        # the hub announces downloads on stdout, which carries our results: keep it clean
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return create_timm_model(name).state_dict()
    except Exception as e:  # no network, proxy, offline hub, bad file, …
        raise UserError(f"{arg}: could not fetch timm's weights ({_short(e)}); download "
                        f"{where} elsewhere and pass the file instead") from None


_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net", "network")


def _state_dict_of(obj: object, name: str) -> dict[str, torch.Tensor]:
    """Unwrap training checkpoints ({'state_dict': …}, {'model': …}) down to the tensors."""
    for _ in range(8):  # wrappers nest a few levels at most
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if inner is not None and len(tensors) < 4:
            obj = inner
            continue
        if tensors:
            return tensors
        break
    what = (f"a dict with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, dict)
            else f"a {type(obj).__name__}")
    raise UserError(f"{name}: {what}; expected a state dict of tensors (optionally under "
                    "'state_dict' or 'model')")


# -- layouts: each maps one seed's keys to Backbone keys -----------------------------------
# anchor = the stem conv's key, which locates the prefix (module., backbone.body., …)
_ANCHORS = {"torchvision": "features.0.0.weight", "timm": "conv_stem.weight",
            "fnacli": "stem.conv.weight"}
_IGNORED = ("classifier.", "fc.")  # ImageNet classifiers are not part of a backbone


def from_state_dict(state: dict[str, torch.Tensor], name: str,
                    spec: ArchSpec | None = None) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """Backbone-keyed tensors and the spec of a MobileNetV2 state dict in any known layout.

    ``spec`` (from fnacli metadata) is used as given; otherwise it is inferred from shapes.
    """
    state = check_weights(state, name)
    layout, prefix = _find_layout(state, name)
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    inner = {k: v for k, v in inner.items() if not k.startswith(_IGNORED)}
    convert: Callable[[dict[str, torch.Tensor], str], tuple[dict, list, dict]] = {
        "torchvision": _from_torchvision, "timm": _from_timm, "fnacli": _from_fnacli}[layout]
    stem, blocks, head = convert(inner, name)
    if spec is None:
        spec = _infer_spec(stem, blocks, head, layout, name)
    elif spec.head_out and not head:
        spec = replace(spec, head_out=None)  # e.g. a RetinaNet detector keeps no head conv
    tensors = _assemble(stem, blocks, head, spec, name)
    _check_shapes(tensors, spec, name)
    return tensors, spec


def _find_layout(state: dict[str, torch.Tensor], name: str) -> tuple[str, str]:
    found: list[tuple[int, str, str]] = []
    for k in state:
        for layout, anchor in _ANCHORS.items():
            if k == anchor or k.endswith("." + anchor):
                prefix = k[: len(k) - len(anchor)]
                found.append((len(prefix), prefix, layout))
    if not found:
        sample = ", ".join(list(state)[:3])
        raise UserError(f"{name}: not a MobileNetV2 state dict (no torchvision "
                        "'features.0.0.weight', timm 'conv_stem.weight' or fnacli "
                        f"'stem.conv.weight'; its keys look like {sample})")
    _, prefix, layout = min(found)  # the shortest prefix: the model itself, not an EMA copy
    return layout, prefix


def _rename(keys: dict[str, torch.Tensor], table: list[tuple[str, str]], where: str,
            name: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in keys.items():
        for old, new in table:
            if k.startswith(old) and k[len(old):] in (*_BN_PARAMS,):
                out[new + k[len(old):]] = v
                break
        else:
            raise UserError(f"{name}: not MobileNetV2-shaped: unexpected tensor '{where}{k}'")
    return out


def _split(inner: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in inner.items() if k.startswith(prefix)}


_TV_EXPANDED = [("conv.0.0.", "expand.conv."), ("conv.0.1.", "expand.bn."),
                ("conv.1.0.", "dw.conv."), ("conv.1.1.", "dw.bn."),
                ("conv.2.", "project.conv."), ("conv.3.", "project.bn.")]
_TV_E1 = [("conv.0.0.", "dw.conv."), ("conv.0.1.", "dw.bn."),
          ("conv.1.", "project.conv."), ("conv.2.", "project.bn.")]


def _from_torchvision(inner: dict[str, torch.Tensor], name: str) -> tuple[dict, list, dict]:
    """torchvision's flat ``features.N``: stem, inverted residuals (``conv.*``), head conv."""
    indices = sorted({int(m.group(1)) for k in inner if (m := re.match(r"features\.(\d+)\.", k))})
    stem = _rename(_split(inner, "features.0."), [("0.", "conv."), ("1.", "bn.")],
                   "features.0.", name)
    blocks, head = [], {}
    for n in indices[1:]:
        part = _split(inner, f"features.{n}.")
        if all(k.startswith("conv.") for k in part):
            if head:
                raise UserError(f"{name}: not MobileNetV2-shaped: block features.{n} follows "
                                "the head conv")
            table = _TV_EXPANDED if "conv.3.weight" in part else _TV_E1
            blocks.append(_rename(part, table, f"features.{n}.", name))
        elif not head:
            head = _rename(part, [("0.", "conv."), ("1.", "bn.")], f"features.{n}.", name)
        else:
            raise UserError(f"{name}: not MobileNetV2-shaped: unexpected layer features.{n}")
    other = [k for k in inner if not k.startswith("features.")]
    if other:
        raise UserError(f"{name}: not MobileNetV2-shaped: unexpected tensor '{other[0]}'")
    return stem, blocks, head


_TIMM_IR = [("conv_pw.", "expand.conv."), ("bn1.", "expand.bn."), ("conv_dw.", "dw.conv."),
            ("bn2.", "dw.bn."), ("conv_pwl.", "project.conv."), ("bn3.", "project.bn.")]
_TIMM_DS = [("conv_dw.", "dw.conv."), ("bn1.", "dw.bn."), ("conv_pw.", "project.conv."),
            ("bn2.", "project.bn.")]


def _from_timm(inner: dict[str, torch.Tensor], name: str) -> tuple[dict, list, dict]:
    """timm's ``blocks.S.L`` (DepthwiseSeparable / InvertedResidual), conv_stem, conv_head."""
    stem = _rename({k: v for k, v in inner.items() if k.startswith(("conv_stem.", "bn1."))},
                   [("conv_stem.", "conv."), ("bn1.", "bn.")], "", name)
    head = _rename({k: v for k, v in inner.items() if k.startswith(("conv_head.", "bn2."))},
                   [("conv_head.", "conv."), ("bn2.", "bn.")], "", name)
    ids = sorted({(int(m.group(1)), int(m.group(2)))
                  for k in inner if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    blocks = []
    for s, i in ids:
        part = _split(inner, f"blocks.{s}.{i}.")
        table = _TIMM_IR if "conv_pwl.weight" in part else _TIMM_DS
        block = _rename(part, table, f"blocks.{s}.{i}.", name)
        block["_stage"] = s  # timm groups layers into stages by key
        blocks.append(block)
    other = [k for k in inner
             if not k.startswith(("blocks.", "conv_stem.", "bn1.", "conv_head.", "bn2."))]
    if other:
        raise UserError(f"{name}: not MobileNetV2-shaped: unexpected tensor '{other[0]}'")
    return stem, blocks, head


def _from_fnacli(inner: dict[str, torch.Tensor], name: str) -> tuple[dict, list, dict]:
    stem = _split(inner, "stem.")
    head = _split(inner, "head.")
    ids = sorted({(int(m.group(1)), int(m.group(2)))
                  for k in inner if (m := re.match(r"stages\.(\d+)\.(\d+)\.", k))})
    blocks = []
    for s, i in ids:
        block = dict(_split(inner, f"stages.{s}.{i}."))
        block["_stage"] = s
        blocks.append(block)
    other = [k for k in inner if not k.startswith(("stem.", "head.", "stages."))]
    if other:
        raise UserError(f"{name}: not MobileNetV2-shaped: unexpected tensor '{other[0]}'")
    return stem, blocks, head


def _shape(block: dict, key: str, name: str, where: str) -> tuple[int, ...]:
    if key not in block:
        raise UserError(f"{name}: not MobileNetV2-shaped: {where} has no '{key}' tensor")
    return tuple(block[key].shape)


def _infer_spec(stem: dict, blocks: list[dict], head: dict, layout: str, name: str) -> ArchSpec:
    """Widths, kernels, expansions and depths from shapes; strides from MobileNetV2."""
    if not blocks:
        raise UserError(f"{name}: not MobileNetV2-shaped: no inverted-residual blocks found")
    sw = _shape(stem, "conv.weight", name, "the stem")
    if len(sw) != 4 or sw[1] != 3:
        raise UserError(f"{name}: not MobileNetV2-shaped: stem conv has shape {list(sw)}, "
                        "expected [C, 3, 3, 3]")
    rows = []  # (stage key or None, cin, cout, Op)
    for b, block in enumerate(blocks):
        where = f"block {b}"
        dw = _shape(block, "dw.conv.weight", name, where)
        pw = _shape(block, "project.conv.weight", name, where)
        if len(dw) != 4 or dw[1] != 1 or dw[2] != dw[3] or dw[2] not in (3, 5, 7):
            raise UserError(f"{name}: not MobileNetV2-shaped: {where} depthwise conv has shape "
                            f"{list(dw)}, expected [C, 1, k, k] with k in 3/5/7")
        hidden = dw[0]
        if "expand.conv.weight" in block:
            ew = _shape(block, "expand.conv.weight", name, where)
            cin = ew[1]
            if hidden % cin or hidden == cin:
                raise UserError(f"{name}: {where} expands {cin} to {hidden} channels, which is "
                                "not an integral expansion ratio > 1 (not representable as kK_eE)")
            expand = hidden // cin
        else:
            cin, expand = hidden, 1
        rows.append((block.get("_stage"), cin, pw[0], Op(dw[2], expand)))
    groups = _group_stages(rows, layout)
    if len(groups) != len(MBV2_STRIDES):
        raise UserError(f"{name}: {len(groups)} stages found; strides are not stored in a state "
                        f"dict and only MobileNetV2's {len(MBV2_STRIDES)}-stage layout is known")
    stages = []
    for g, stride in zip(groups, MBV2_STRIDES, strict=True):
        outs = {rows[b][2] for b in g}
        if len(outs) != 1:
            raise UserError(f"{name}: not MobileNetV2-shaped: layers of one stage have different "
                            f"output widths {sorted(outs)}")
        stages.append(Stage(outs.pop(), stride, tuple(rows[b][3] for b in g)))
    head_out = _shape(head, "conv.weight", name, "the head")[0] if head else None
    return ArchSpec(sw[0], 2, tuple(stages), head_out)


def _group_stages(rows: list[tuple], layout: str) -> list[list[int]]:
    if layout != "torchvision":  # timm and fnacli name their stages
        keys = sorted({r[0] for r in rows})
        return [[b for b, r in enumerate(rows) if r[0] == key] for key in keys]
    if len(rows) == sum(MBV2_DEPTHS):  # torchvision's flat list: MobileNetV2's stage sizes
        groups, start = [], 0
        for n in MBV2_DEPTHS:
            groups.append(list(range(start, start + n)))
            start += n
        return groups
    groups: list[list[int]] = []  # otherwise a new stage starts where the width changes
    for b, (_, _, cout, _) in enumerate(rows):
        if groups and rows[groups[-1][-1]][2] == cout:
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def _assemble(stem: dict, blocks: list[dict], head: dict, spec: ArchSpec,
              name: str) -> dict[str, torch.Tensor]:
    out = {f"stem.{k}": v for k, v in stem.items()}
    positions = [(s, i) for s, i, *_ in spec.layers()]
    if len(positions) != len(blocks):
        raise UserError(f"{name}: {len(blocks)} blocks in the tensors but {len(positions)} "
                        "layers in its spec")
    for (s, i), block in zip(positions, blocks, strict=True):
        out.update({f"stages.{s}.{i}.{k}": v for k, v in block.items() if k != "_stage"})
    if spec.head_out:
        out.update({f"head.{k}": v for k, v in head.items()})
    return out


def _check_shapes(tensors: dict[str, torch.Tensor], spec: ArchSpec, name: str) -> None:
    """Every tensor must be exactly what Backbone(spec) expects (built on the meta device)."""
    from fnacli.nn.backbone import Backbone

    with torch.device("meta"):
        ref = Backbone(spec).state_dict()
    for k, v in ref.items():
        if k not in tensors:
            if k.endswith("num_batches_tracked"):  # older checkpoints lack the counter
                tensors[k] = torch.tensor(0, dtype=torch.long)
                continue
            raise UserError(f"{name}: not MobileNetV2-shaped: missing tensor for {k}")
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise UserError(f"{name}: not MobileNetV2-shaped: {k} has shape "
                            f"{list(tensors[k].shape)}, expected {list(v.shape)} for its spec")
    extra = [k for k in tensors if k not in ref]
    if extra:
        raise UserError(f"{name}: not MobileNetV2-shaped: unexpected tensor '{extra[0]}'")
    # Backbone's key order makes saved files and reports stable
    ordered = {k: tensors[k] for k in ref}
    tensors.clear()
    tensors.update(ordered)
