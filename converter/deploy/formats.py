"""The export formats, one row each: how DST's name selects it, how Keras writes it (`model.export`, which
drives TensorFlow's SavedModel writer, the TFLite converter, tf2onnx and OpenVINO's converter), and a
runner that loads the artifact with its own runtime and maps NTHWC float32 clips to logits.

Adding a format is one row here plus a test. Runtimes are imported inside the functions that need them;
`missing_module` names the one that is not installed, for a one-line error naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.errors import InputError

EXTRA = "export"
INSTALL_HINT = f"pip install 'vrconvert[{EXTRA}]'"


@dataclass(frozen=True)
class Signature:
    """What a deployed artifact takes and returns, read back from the runtime."""

    input_name: str
    input_shape: list  # None or -1 (or a name) where the dimension is free
    dtype: str
    output_shape: list

    def as_dict(self) -> dict:
        return {"input": self.input_name, "shape": self.input_shape, "dtype": self.dtype, "output": self.output_shape}


class Runner:
    """A loaded artifact: call it with an (N, T, H, W, 3) float32 array, get (N, classes) logits."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], signature: Signature, runtime: str) -> None:
        self.run, self.signature, self.runtime = run, signature, runtime

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        dtype = np.uint8 if clip.dtype == np.uint8 else np.float32  # uint8: frames for an in-model transform
        return np.asarray(self.run(np.ascontiguousarray(clip, dtype=dtype)))


# ---- exporters: Keras' own model.export, options only -------------------------------------------------


def _export_saved_model(model, path: Path, signature) -> list[Path]:
    model.export(str(path), format="tf_saved_model", verbose=False, input_signature=signature)
    return [path]


def _export_litert(model, path: Path, signature) -> list[Path]:
    """TFLite builtin ops only: LiteRT runtimes do not run Flex (SELECT_TF_OPS) models, so an op without a
    builtin kernel fails the conversion instead of falling back."""
    import tensorflow as tf

    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    model.export(str(path), format="litert", verbose=False, input_signature=signature, target_spec=builtins)
    return [path]


def _export_onnx(model, path: Path, signature) -> list[Path]:
    model.export(str(path), format="onnx", verbose=False, input_signature=signature)
    return [path]


def _export_openvino(model, path: Path, signature) -> list[Path]:
    model.export(str(path), format="openvino", verbose=False, input_signature=signature)
    return [path.with_suffix(".bin"), path]


# ---- runners: each artifact in its own runtime ------------------------------------------------------


def _dims(shape) -> list:
    """Free dimensions (None, -1, a symbolic name) as None, fixed ones as int."""
    return [None if d is None or isinstance(d, str) or int(d) < 0 else int(d) for d in shape]


def _run_saved_model(path: Path, **_) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()
    (out_spec,) = serve.structured_outputs.values()

    def run(x):
        return loaded.serve(tf.constant(x)).numpy()

    signature = Signature(name, _dims(spec.shape.as_list()), spec.dtype.name, _dims(out_spec.shape.as_list()))
    return Runner(run, signature, f"tensorflow {tf.__version__}")


def _run_litert(path: Path, **_) -> Runner:
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    flex = sorted({op["op_name"] for op in interpreter._get_ops_details() if op["op_name"].startswith("Flex")})
    if flex:
        raise InputError(f"{path}: uses TensorFlow (Flex) ops that LiteRT cannot run: {', '.join(flex)}")
    (source,) = interpreter.get_input_details()
    (sink,) = interpreter.get_output_details()
    shape: list = [None]

    def run(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(source["index"], x.shape, strict=True)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(sink["index"]).copy()

    signature = Signature(
        source["name"], _dims(source["shape_signature"]), np.dtype(source["dtype"]).name, _dims(sink["shape_signature"])
    )
    return Runner(run, signature, f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '')}".strip())


def _run_onnx(path: Path, **_) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,) = session.get_inputs()
    (sink,) = session.get_outputs()

    def run(x):
        return session.run([sink.name], {source.name: x})[0]

    dtype = source.type.removeprefix("tensor(").removesuffix(")").replace("float", "float32")
    return Runner(
        run, Signature(source.name, _dims(source.shape), dtype, _dims(sink.shape)), f"onnxruntime {ort.__version__}"
    )


def _run_openvino(path: Path, precision: str | None = "f32", **_) -> Runner:
    """OpenVINO's CPU plugin computes in bf16 by default where the CPU has bf16 units (avx512_bf16, AMX):
    `precision="f32"` pins INFERENCE_PRECISION_HINT; None keeps the plugin's default."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
    )
    request = compiled.create_infer_request()
    source, sink = compiled.input(0), compiled.output(0)

    def run(x):
        return request.infer({0: x})[sink].copy()

    shape = [None if d.is_dynamic else d.get_length() for d in source.get_partial_shape()]
    out = [None if d.is_dynamic else d.get_length() for d in sink.get_partial_shape()]
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    used = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # an ov.Type: "f32", "bf16"
    signature = Signature(source.get_any_name(), shape, source.get_element_type().to_dtype().name, out)
    return Runner(run, signature, f"openvino {ov.__version__.split('-')[0]} (CPU, inference precision {used})")


@dataclass(frozen=True)
class Format:
    """One deployment format: DST suffix, Keras' exporter, the runtime that runs the artifact."""

    name: str
    suffix: str | None  # None: a directory (the SavedModel)
    description: str
    modules: tuple[str, ...]  # what exporting and running it import (beyond TensorFlow and Keras)
    export: Callable  # (keras model, path, input signature) -> the paths written, the main one last
    runner: Callable[..., Runner]  # (path, **options) -> a Runner
    lacks: tuple[tuple[str, str], ...] = ()  # (Keras layer class, the op its runtime has no kernel for)

    def lacking_op(self, model) -> str | None:
        """The first op of `model` this format's runtime cannot run, by the layers that need it; else None."""
        classes = {type(layer).__name__ for layer in model.layers}
        return next((op for cls, op in self.lacks if cls in classes), None)

    def missing_module(self) -> str | None:
        for module in ("tensorflow", *self.modules):
            if _missing(module):
                return module
        return None


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent blocked (None in sys.modules) or half installed
        return True


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("saved_model", None, "TensorFlow SavedModel directory", (), _export_saved_model, _run_saved_model),
        Format(
            "litert",
            ".tflite",
            "LiteRT (TFLite) flatbuffer",
            ("ai_edge_litert",),
            _export_litert,
            _run_litert,
            lacks=(("MaxPooling3D", "MaxPool3D (3D max pooling)"),),  # no LiteRT builtin; S3D's pools
        ),
        Format("onnx", ".onnx", "ONNX (via tf2onnx)", ("tf2onnx", "onnx", "onnxruntime"), _export_onnx, _run_onnx),
        Format("openvino", ".xml", "OpenVINO IR (.xml + .bin)", ("openvino", "scipy"), _export_openvino, _run_openvino),
    )
}


def format_for(dst: Path, name: str | None = None) -> Format:
    """The format `name` asks for, else the one DST's suffix names; a path without a suffix is a
    SavedModel directory. Any other suffix is refused (a typo should not become a directory)."""
    if name is not None:
        if name not in FORMATS:
            raise InputError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
        chosen = FORMATS[name]
        if chosen.suffix and dst.suffix != chosen.suffix:
            raise InputError(f"{dst}: a {chosen.description} must end with {chosen.suffix}")
        return chosen
    for f in FORMATS.values():
        if f.suffix and dst.suffix == f.suffix:
            return f
    if dst.suffix == "" or dst.is_dir():
        return FORMATS["saved_model"]
    known = ", ".join(f.suffix for f in FORMATS.values() if f.suffix)
    raise InputError(
        f"{dst}: unknown export suffix {dst.suffix!r}; use {known}, a path without a suffix (a SavedModel "
        "directory) or --format"
    )


def targets(fmt: Format, dst: Path) -> list[Path]:
    """Every path the artifact occupies, the main one last (OpenVINO's .bin sits beside its .xml)."""
    return [dst.with_suffix(".bin"), dst] if fmt.name == "openvino" else [dst]
