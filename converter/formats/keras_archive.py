"""Checks of a Keras file BEFORE Keras builds, extracts or allocates anything from it.

`keras.models.load_model` builds every layer its config declares (a 32768x32768 Dense is 4 GB) and
extracts the archive's members (to $TMPDIR when large) before vrconvert sees a single weight. So the
file is read here first, within `limits`:
- a `.keras` zip: member count, names and uncompressed sizes from the central directory; config.json
  size; the config's layers (built-in classes of vrconvert's models only, float dtype policies) and
  the weight shapes they declare, which must fit a known architecture (the same detection as for a
  torch checkpoint); the weights file's datasets must be exactly those shapes, and its size what
  they need.
- a legacy `.h5` model: the same config (from its `model_config` attribute) and datasets.
- a `.weights.h5`: object count, group names, dataset ranks, sizes and dtypes (the accounting's rule).
Every HDF5 part is walked by `h5safe` (hard links only, counts before lists, each dataset's storage
checked), so Keras never meets a link, a chunk bomb or a plugin filter; the path gate comes first.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.arch import accounting, folding, heads
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import h5safe, zip_members
from vrconvert.converter.formats.gate import regular_file

# The built-in Keras layers vrconvert's models are made of (tests check every variant against it).
LAYER_CLASSES = frozenset(
    {
        "InputLayer",
        "Conv3D",
        "BatchNormalization",
        "Dense",
        "ReLU",
        "Activation",
        "ZeroPadding3D",
        "Add",
        "Multiply",
        "Concatenate",
        "Dropout",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling3D",
        "AveragePooling3D",
        "MaxPooling3D",
        "LayerNormalization",  # Swin3D's norms
        # the preprocessing front a model may carry (models_tf.preprocessing): no weights
        "Rescaling",
        "Resizing",
        "Cropping3D",
        "Normalization",
        "TimeDistributed",
        # MViT's token layers
        "Reshape",
        "Cropping1D",
        "Flatten",
    }
)
# What wraps a backbone (`build(include_top=False)` plus the user's head): nested models and the weightless
# layers a head is made with; anything else around a backbone is refused by name when the model is read.
CONTAINER_CLASSES = frozenset({"Functional", "Sequential"})
CONTAINER_MODULES = frozenset({"keras.src.models.functional", "keras.src.models.sequential", "keras", None})
WRAPPER_CLASSES = frozenset({"Dropout", "SpatialDropout3D", "Flatten"})
KERAS_NESTING = 4  # models within models: a wrapped backbone is 1
# vrconvert's own registered layers, by class: the module they must come from (MViT's, Swin3D's and its
# short-side resize)
VRCONVERT_CLASSES = {
    **dict.fromkeys(
        ("ClassPositionEmbedding", "MultiscaleAttention", "TokenMaxPool"), "vrconvert.models_tf.mvit_layers"
    ),
    **dict.fromkeys(
        ("Gelu", "PadToMultiple", "PatchMerge", "ShiftedWindowAttention3D"), "vrconvert.models_tf.swin3d_layers"
    ),
    "ShortSideResizeCrop": "vrconvert.models_tf.short_side",
}
FLOAT_POLICIES = frozenset({"float16", "float32", "float64", "bfloat16", "mixed_float16", "mixed_bfloat16"})
KERAS_MEMBERS = re.compile(r"config\.json|metadata\.json|model\.weights\.h5|assets/[^/].*")
H5_LAYER_NAME = re.compile(r"[a-z_]+[a-z0-9]*(_\d+)?")  # `conv3d_7`, `batch_normalization`; never `conv3d_x`


def _refuse(path: Path, why: str) -> InputError:
    return InputError(f"{path}: refused before loading: {why}")


def check(path: Path, arch: str | None = None, head: str | None = None) -> None:
    """Raises a one-line InputError unless the Keras file at `path` is within every limit and its
    declared layers fit a known architecture (`arch` when given)."""
    regular_file(path)
    name = path.name
    try:
        if name.endswith(".weights.h5"):
            check_weights_h5(path)
        elif name.endswith(".keras"):
            _check_keras_zip(path, arch, head)
        elif name.endswith(".h5"):
            _check_legacy_h5(path, arch)
    except InputError as exc:
        text = str(exc)
        raise (exc if text.startswith(str(path)) else _refuse(path, text)) from exc
    except Exception as exc:  # h5py, zipfile and json raise many types on damaged files
        raise _refuse(path, f"unreadable ({type(exc).__name__}: {limits.one_line(str(exc))})") from exc


def _check_keras_zip(path: Path, arch: str | None, head: str | None = None) -> None:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        limits.check("the number of archive members", len(infos), limits.KERAS_MEMBERS)
        for info in infos:
            if not KERAS_MEMBERS.fullmatch(info.filename) or ".." in info.filename:
                raise InputError(f"an unexpected archive member {limits.brief(info.filename)}")
        if len({i.filename for i in infos}) != len(infos):
            raise InputError("duplicate archive members")
        limits.check("the archive's uncompressed size", sum(i.file_size for i in infos), limits.KERAS_BYTES, " bytes")
        names = {i.filename: i for i in infos}
        if "config.json" not in names or "model.weights.h5" not in names:
            raise InputError("not a Keras 3 model archive (no config.json or model.weights.h5)")
        config_info = names["config.json"]
        limits.check("config.json", config_info.file_size, limits.KERAS_CONFIG_BYTES, " bytes")
        with archive.open(config_info) as member:
            text = member.read(limits.KERAS_CONFIG_BYTES + 1)
        limits.check("config.json", len(text), limits.KERAS_CONFIG_BYTES, " bytes")
        shapes = _declared_shapes(json.loads(text), arch, head=head)
        weights = names["model.weights.h5"]
        most = 8 * sum(_numel(s) for s in shapes.values()) + 16 * limits.MIB  # float64 at most, plus HDF5's own
        limits.check("model.weights.h5", weights.file_size, most, " bytes")
        import h5py

        with _member(archive, weights, path) as member, h5py.File(member, "r") as f:  # HDF5's metadata only
            _check_datasets(f, Counter(shapes.values()))


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path):
    """A member to hand h5py: a window onto the archive file where Keras stored it uncompressed (as it
    does), else zipfile's reader. HDF5 seeks back and forth through its metadata, and zipfile's reader
    answers every backward seek by reading (and hashing) the member again from its start."""
    if info.compress_type != zipfile.ZIP_STORED:
        return archive.open(info)
    size = path.stat().st_size
    raw = open(path, "rb")  # noqa: SIM115 (closed by the window)
    try:
        start = zip_members.data_offset(raw, info)
        if start is None:
            raise InputError(f"a damaged local header for {info.filename}")
        if info.compress_size != info.file_size or start + info.file_size > size:
            raise InputError(f"{info.filename} extends past the end of the file")
    except BaseException:
        raw.close()
        raise
    return _Window(raw, start, info.file_size)  # closes `raw` when h5py is done with it


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of an open file, read-only and seekable; every read is clipped to it."""

    def __init__(self, raw, start: int, size: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(memoryview(buffer)[:count])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _check_legacy_h5(path: Path, arch: str | None) -> None:
    with h5safe.open_file(path) as f:
        h5safe.attributes(f, "/")
        raw = h5safe.text(f, "model_config")
        weights = h5safe.child(f, "model_weights")
        if raw is None or weights is None:
            raise InputError("not a Keras .h5 model (no model_config or model_weights); a .weights.h5?")
        limits.check("the model_config attribute", len(raw), limits.KERAS_CONFIG_BYTES, " bytes")
        h5safe.keras2_weights(weights)  # the names Keras will follow: counted, hard links only
        stored = _check_datasets(weights, None)  # `layer/layer/var` -> shape
        by_path = {f"{n.split('/')[0]}/{n.rsplit('/', 1)[-1]}": shape for n, shape in stored.items()}
        shapes = _declared_shapes(json.loads(raw), arch, by_path)
        if Counter(stored.values()) != Counter(shapes.values()):
            raise InputError("its weights do not match the shapes its config declares")


def check_weights_h5(path: Path) -> dict[str, tuple[int, ...]]:
    """The dataset shapes of a `.weights.h5` (checked: count, names, ranks, sizes, dtypes)."""
    with h5safe.open_file(path) as f:
        return _check_datasets(f, None)


def _check_datasets(group, expected: Counter | None) -> dict[str, tuple[int, ...]]:
    """Walks `group` with `h5safe.walk` (hard links only, at most `limits.H5_OBJECTS` objects, every
    dataset's storage checked): every dataset floating point (the accounting's dtype rule), at most
    5-D, within the element cap; with `expected`, the shapes must be exactly that multiset."""
    found: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for name, obj in h5safe.walk(group).datasets.items():
        parts = name.split("/")
        if parts[0] == "layers" and len(parts) > 1 and not H5_LAYER_NAME.fullmatch(parts[1]):
            raise InputError(f"an unexpected HDF5 group {limits.brief(parts[1])}")
        shape = tuple(int(n) for n in obj.shape)
        if len(shape) > 5:
            raise InputError(f"a {len(shape)}-D dataset {limits.brief(name)}")
        found[name] = shape
        dtypes[name] = "bfloat16" if obj.dtype.name == "void16" else obj.dtype.name
    total = sum(_numel(s) for s in found.values())
    limits.check("the number of elements in the file", total, limits.STATE_ELEMENTS)
    accounting.check_dtypes(dtypes, "the file")
    if expected is not None and Counter(found.values()) != expected:
        extra = Counter(found.values()) - expected
        raise InputError(
            "its weights do not match the shapes its config declares"
            + (f" (unexpected {', '.join(map(str, list(extra)[:3]))})" if extra else "")
        )
    return found


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _int(value, what: str, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise InputError(f"{what} is {limits.brief(value)}, not an integer from 1 to {most:,}")
    return value


def _check_resizing(cfg, name: str) -> None:
    """A Resizing layer's output (every frame at run time) is within the video bound."""
    if isinstance(cfg, dict) and ("height" in cfg or "width" in cfg):
        _int(cfg.get("height"), f"layer {limits.brief(name)}'s height", limits.VIDEO_SIDE)
        _int(cfg.get("width"), f"layer {limits.brief(name)}'s width", limits.VIDEO_SIDE)


def _token_layer_shapes(kind: str, cfg: dict, name: str) -> dict[str, tuple[int, ...]]:
    """The variables MViT's registered layers create, from their config (each number bounded)."""

    def number(key: str, most: int = limits.LAYER_UNITS) -> int:
        return _int(cfg.get(key), f"layer {limits.brief(name)}'s {key}", most)

    def triple(key: str, most: int) -> tuple[int, ...]:
        value = cfg.get(key)
        if not isinstance(value, list) or len(value) != 3:
            raise InputError(f"layer {limits.brief(name)} has a malformed {key}")
        return tuple(_int(v, f"layer {limits.brief(name)}'s {key}", most) for v in value)

    if kind == "ClassPositionEmbedding":
        c, (t, h, w) = number("channels"), triple("grid", limits.CLIP_SIDE)
        extra = {"spatial_pos": (h * w, c), "temporal_pos": (t, c), "class_pos": (c,)} if cfg.get("absolute") else {}
        return {f"{name}/{var}": shape for var, shape in {"class_token": (c,), **extra}.items()}
    dim_in, dim, heads = number("dim_in"), number("dim"), number("heads")
    hd = dim // heads
    shapes = {
        "qkv/kernel": (dim_in, 3 * dim),
        "qkv/bias": (3 * dim,),
        "project/kernel": (dim, dim),
        "project/bias": (dim,),
    }
    for which, key in (("q", "kernel_q"), ("k", "kernel_kv"), ("v", "kernel_kv")):
        if cfg.get(key) is not None:
            shapes[f"pool_{which}/kernel"] = (*triple(key, limits.KERNEL_SIZE), 1, hd)
            shapes[f"pool_{which}_norm/gamma"] = shapes[f"pool_{which}_norm/beta"] = (hd,)
    if cfg.get("rel_pos"):
        sizes = cfg.get("rel_pos_sizes")
        if not isinstance(sizes, list) or len(sizes) != 2:
            raise InputError(f"layer {limits.brief(name)} has malformed rel_pos_sizes")
        spatial, temporal = (_int(n, f"layer {limits.brief(name)}'s rel_pos_sizes", limits.LAYER_UNITS) for n in sizes)
        shapes.update({"rel_pos_h": (spatial, hd), "rel_pos_w": (spatial, hd), "rel_pos_t": (temporal, hd)})
    return {f"{name}/{var}": shape for var, shape in shapes.items()}


def _declared_shapes(
    config, arch: str | None, stored: dict | None = None, head: str | None = None
) -> dict[str, tuple[int, ...]]:
    """The weight shapes a Functional model's config declares, by variable path, after checking each
    layer; they must fit a known architecture (detected exactly as for a torch checkpoint). A legacy
    `.h5` config records no input shapes: there a layer's input channels are read from its `stored`
    weights (the declared kernel sizes, filters and units must then agree with them)."""
    if not isinstance(config, dict) or config.get("class_name") not in CONTAINER_CLASSES:
        raise InputError("not a Keras functional model")
    layers = _flattened(config)
    limits.check("the number of layers", len(layers), limits.H5_OBJECTS)
    shapes: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    attention: dict[str, tuple] = {}
    activation = None
    for layer in layers:
        kind, cfg, name = _checked_layer(layer)
        if name == "stem_2":
            activation = "relu" if kind == "ReLU" else cfg.get("activation")
        if kind in ("ClassPositionEmbedding", "MultiscaleAttention"):  # shapes from their own config
            shapes.update(_token_layer_shapes(kind, cfg, name))
        if kind == "ShiftedWindowAttention3D":
            attention[name] = _swin_attention(cfg, name, shapes)
        if kind in ("Conv3D", "Dense", "BatchNormalization", "LayerNormalization"):
            kinds[name] = kind
            shapes.update(_weighted_layer_shapes(layer, kind, cfg, name, stored))
    limits.check("the number of weights the config declares", sum(map(_numel, shapes.values())), limits.STATE_ELEMENTS)
    shapes = _head_as_fc(shapes, kinds, head)  # a backbone may be wrapped with a head of its user's naming
    activation = {"hard_silu": "hard_swish"}.get(activation, activation) if isinstance(activation, str) else None
    model_name = config["config"].get("name")
    if attention:  # a Swin3D: its own mapping's rule table
        _detect_swin3d(shapes, attention, arch)
    elif isinstance(model_name, str) and model_name.endswith(folding.FOLDED_SUFFIX):  # detected by its own rule
        folding.detect(shapes, arch, activation)
    else:
        accounting.detect(accounting.torch_shapes_of(shapes), arch, activation)  # an InputError unless a known network
    return shapes


def _checked_layer(layer) -> tuple[str, dict, str]:
    """(class, config, name) of one layer entry, after checking its class and module, name, dtype policy
    and, for the in-model transform, its resize sizes."""
    if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
        raise InputError("a malformed layer in the config")
    kind, cfg = layer.get("class_name"), layer["config"]
    name = cfg.get("name")
    module = layer.get("module", "keras.layers")
    builtin = kind in LAYER_CLASSES | WRAPPER_CLASSES and module in ("keras.layers", None)
    if not builtin and VRCONVERT_CLASSES.get(kind) != module:
        raise InputError(f"a layer of class {limits.brief(kind)}, which vrconvert's models never use")
    if not isinstance(name, str) or not name:
        raise InputError("a layer without a name")
    policy = cfg.get("dtype")
    policy = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    if policy is not None and policy not in FLOAT_POLICIES and (kind, policy) != ("InputLayer", "uint8"):
        raise InputError(f"layer {limits.brief(name)} has the dtype policy {limits.brief(policy)}")
    if kind == "TimeDistributed":  # the per-frame resize only: Keras builds the wrapped layer too
        inner = cfg.get("layer")
        inner = inner if isinstance(inner, dict) and isinstance(inner.get("config"), dict) else {"config": {}}
        if inner.get("class_name") != "Resizing" or inner.get("module", "keras.layers") != "keras.layers":
            raise InputError(f"layer {limits.brief(name)} wraps a layer vrconvert's models never wrap")
        for side in ("height", "width"):
            _int(inner["config"].get(side), f"layer {limits.brief(name)}'s {side}", limits.CLIP_SIDE)
    if kind == "Resizing":
        _check_resizing(cfg, name)
    return kind, cfg, name


def _weighted_layer_shapes(layer: dict, kind: str, cfg: dict, name: str, stored: dict | None) -> dict:
    """The variables a Conv3D, Dense, BatchNormalization or LayerNormalization declares, from its config
    and its input channels (recorded in its build config; a legacy `.h5`'s from its `stored` weights)."""
    build = layer.get("build_config") or {}
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if (not isinstance(shape, list) or not shape) and stored is not None:
        weight = stored.get(f"{name}/kernel" if kind != "BatchNormalization" else f"{name}/moving_mean")
        shape = [weight[-2] if kind == "Conv3D" else weight[0]] if weight else None
    if not isinstance(shape, list) or not shape:
        raise InputError(f"layer {limits.brief(name)} declares no input shape")
    channels = _int(shape[-1], f"layer {limits.brief(name)}'s input channels", limits.LAYER_UNITS)
    shapes: dict[str, tuple[int, ...]] = {}
    if kind == "Conv3D":
        filters = _int(cfg.get("filters"), f"layer {limits.brief(name)}'s filters", limits.LAYER_UNITS)
        kernel = cfg.get("kernel_size")
        if not isinstance(kernel, list) or len(kernel) != 3:
            raise InputError(f"layer {limits.brief(name)} has a malformed kernel size")
        sides = tuple(_int(k, f"layer {limits.brief(name)}'s kernel", limits.KERNEL_SIZE) for k in kernel)
        shapes[f"{name}/kernel"] = (*sides, channels, filters)
        if cfg.get("use_bias"):
            shapes[f"{name}/bias"] = (filters,)
    elif kind == "Dense":
        units = _int(cfg.get("units"), f"layer {limits.brief(name)}'s units", limits.LAYER_UNITS)
        shapes[f"{name}/kernel"] = (channels, units)
        if cfg.get("use_bias", True):
            shapes[f"{name}/bias"] = (units,)
    else:
        for var, wanted in (("gamma", "scale"), ("beta", "center")):
            if cfg.get(wanted, True):
                shapes[f"{name}/{var}"] = (channels,)
        if kind == "BatchNormalization":
            shapes[f"{name}/moving_mean"] = shapes[f"{name}/moving_variance"] = (channels,)
    return shapes


def _flattened(config, depth: int = 0) -> list:
    """The layer configs of a Functional or Sequential model, nested models' layers in their place
    (a wrapped backbone), at most `limits.KERAS_NESTING` deep."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise InputError("a model config without a layer list")
    out = []
    for layer in layers:
        if isinstance(layer, dict) and layer.get("class_name") in CONTAINER_CLASSES:
            if layer.get("module") not in CONTAINER_MODULES:
                raise InputError(f"a nested model from module {limits.brief(layer.get('module'))}")
            if depth + 1 > KERAS_NESTING:
                raise InputError(f"models nested more than {KERAS_NESTING} deep")
            out += _flattened(layer, depth + 1)
        else:
            out.append(layer)
    return out


def _head_as_fc(shapes: dict[str, tuple[int, ...]], kinds: dict[str, str], head: str | None) -> dict:
    """The declared shapes with the head (found by its role, `converter.arch.heads`) named `fc`."""
    weighted = [
        heads.Weighted(
            name=name,
            kind=kind,
            shapes={p.rsplit("/", 1)[1]: shape for p, shape in shapes.items() if p.rsplit("/", 1)[0] == name},
        )
        for name, kind in kinds.items()
    ]
    found = heads.find_head(weighted, head)
    heads.refuse_foreign(weighted, found)
    renamed = heads.renamed(weighted, found)  # the weighted layers' variables, the head's named `fc` if a user's
    others = {path: shape for path, shape in shapes.items() if path.split("/", 1)[0] not in kinds}
    return {**others, **renamed}  # registered layers' variables (attention, embeddings) kept as declared


def _swin_attention(cfg: dict, name: str, shapes: dict[str, tuple[int, ...]]) -> tuple:
    """A window attention's declared variables (from its config alone) and its (heads, window, shift)."""
    where = f"layer {limits.brief(name)}"
    channels = _int(cfg.get("channels"), f"{where}'s channels", limits.LAYER_UNITS)
    heads = _int(cfg.get("heads"), f"{where}'s heads", limits.LAYER_UNITS)
    window, shift = cfg.get("window"), cfg.get("shift")
    if not (isinstance(window, list) and isinstance(shift, list) and len(window) == len(shift) == 3):
        raise InputError(f"{where} has a malformed window or shift")
    window = tuple(_int(w, f"{where}'s window", limits.KERNEL_SIZE) for w in window)
    if not all(type(s) is int and 0 <= s < w for s, w in zip(shift, window, strict=True)):
        raise InputError(f"{where} has a shift outside its window")
    shift = tuple(shift)
    rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    shapes[f"{name}/relative_position_bias_table"] = (rows, heads)
    shapes[f"{name}/qkv/kernel"], shapes[f"{name}/qkv/bias"] = (channels, 3 * channels), (3 * channels,)
    shapes[f"{name}/proj/kernel"], shapes[f"{name}/proj/bias"] = (channels, channels), (channels,)
    return heads, window, shift


def _detect_swin3d(shapes: dict[str, tuple[int, ...]], attention: dict[str, tuple], arch: str | None) -> None:
    """A Swin3D's declared variables must be exactly a known variant's, and every window attention's heads,
    window and shift its record's (Keras builds each attention's index from its window)."""
    from vrconvert.converter.arch import swin3d, swin3d_mapping

    variant = swin3d_mapping.detect(shapes, keras=True)
    if variant is None or arch not in (None, variant.name):
        raise InputError(f"its layers do not fit {arch or 'any known architecture'}")
    for node in swin3d.expand(variant):
        if node.op == "attn" and attention.get(node.name.replace(".", "_")) != (node.heads, node.window, node.shift):
            raise InputError(f"layer {limits.brief(node.name)}'s attention differs from {variant.name}'s")
