"""Post-training int8 quantization of an exported float artifact, one row per format: OpenVINO IR through
NNCF's `quantize`, ONNX through ONNX Runtime's `quantize_static` (QDQ, per-channel int8 weights, uint8
activations, min-max calibration). Both calibrate by running the float artifact on the calibration clips
in its own runtime. LiteRT has no row: its converter keeps CONV_3D in float32 (a DEQUANTIZE before it, a
QUANTIZE after it, float32 kernels) even when int8-only builtins are requested, so the artifact would not
be int8.

Layers kept in float are named by role: "stem" (the convolutions of the network's first block) and
"classifier" (the last matrix multiply); each quantizer finds them in its own graph in topological order.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import spec
from vrconvert.converter.arch.layers import expand
from vrconvert.converter.errors import InputError

ROLES = ("stem", "classifier")
LITERT_INT8 = (
    "--int8 is not available for LiteRT: TFLite's converter keeps every CONV_3D in float32 (no int8 CONV_3D "
    "kernel), so the .tflite would not be int8; export to .xml (OpenVINO) or .onnx (ONNX Runtime)"
)


@dataclass(frozen=True, kw_only=True)
class Quantized:
    """What a quantizer wrote and which of its graph's nodes stayed in float (by their names there)."""

    paths: list[Path]  # the main one last
    kept_float: list[str]
    tool: str


def stem_convs(variant: spec.Arch) -> int:
    """How many convolutions the network's first block has (R(2+1)D's stem: two, R3D's and MC3's: one)."""
    convs = [r.name for r in expand(variant) if r.op == "conv"]
    first = convs[0].split(".")[0]
    return sum(1 for name in convs if name.split(".")[0] == first)


def pick(convs: list[str], matmuls: list[str], roles: Sequence[str], stem: int) -> list[str]:
    """The node names of `roles`: the first `stem` convolutions and the last matrix multiply."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InputError(f"--keep-float {unknown[0]!r}: choose from {', '.join(ROLES)}")
    names = list(convs[:stem]) if "stem" in roles else []
    return names + (matmuls[-1:] if "classifier" in roles else [])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF and ONNX Runtime's quantizer print progress bars and advice on stdout and stderr; results go
    to stdout, so both are held back for the call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_openvino(src: Path, dst: Path, clips: list[np.ndarray], roles: Sequence[str], stem: int) -> Quantized:
    with _quiet():
        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        model = ov.Core().read_model(str(src))
        ops = model.get_ordered_ops()
        keep = pick(
            [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"],
            [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"],
            roles,
            stem,
        )
        quantized = nncf.quantize(
            model,
            nncf.Dataset(clips),
            subset_size=len(clips),
            ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
        )
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
    return Quantized(paths=[dst.with_suffix(".bin"), dst], kept_float=keep, tool=f"nncf {nncf.__version__}")


def quantize_onnx(src: Path, dst: Path, clips: list[np.ndarray], roles: Sequence[str], stem: int) -> Quantized:
    with _quiet():
        import onnx
        import onnxruntime
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        graph = onnx.load(str(src), load_external_data=False).graph  # nodes are in topological order
        (source,) = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        keep = pick(
            [n.name for n in graph.node if n.op_type == "Conv"],
            [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")],
            roles,
            stem,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.clips = iter(clips)

            def get_next(self):
                clip = next(self.clips, None)
                return None if clip is None else {source: clip}

        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
        )
    return Quantized(paths=[dst], kept_float=keep, tool=f"onnxruntime.quantization {onnxruntime.__version__}")


QUANTIZERS: dict[str, Callable[..., Quantized]] = {"openvino": quantize_openvino, "onnx": quantize_onnx}


def quantizer_for(fmt: str) -> Callable[..., Quantized]:
    if fmt == "litert":
        raise InputError(LITERT_INT8)
    if fmt not in QUANTIZERS:
        raise InputError(f"--int8 is for OpenVINO (.xml) and ONNX (.onnx), not {fmt}")
    return QUANTIZERS[fmt]
