"""`vrconvert inspect` and `vrconvert mapping`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import arch_option, emit_json, json_option

FRAMES_IN = "uint8 frames (N, T, H, W, 3) of any HxW; torchvision's Kinetics transform is in the model"


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@arch_option
@json_option
def inspect(file: Path, arch: str | None, as_json: bool) -> None:
    """Describe a checkpoint or Keras file: format, architecture, classes, parameters, dtype, hash."""
    from vrconvert.converter.arch import accounting
    from vrconvert.converter.arch.families import expand
    from vrconvert.converter.arch.layers import count_params
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import keras_io

    if keras_io.keras_suffix(file):
        from vrconvert.converter.parity.runtime import select_backend_for_files

        select_backend_for_files()
        from vrconvert.models_tf import weights as keras_weights  # lazy: Keras
        from vrconvert.models_tf.preprocessing import has_preprocessing

        variant, model = keras_weights.load_keras_model(file, arch)
        info = {
            "file": str(file),
            "format": keras_io.keras_suffix(file),
            "arch": variant.name,
            "num_classes": variant.num_classes,
            "input": FRAMES_IN
            if has_preprocessing(model)
            else "normalised float32 clips (N, T, H, W, 3): apply the Kinetics transform first",
            "dtypes": sorted({str(v.dtype) for v in model.weights}),
            "hash_check": None,
            "notes": [],
        }
    else:
        from vrconvert.converter.formats import checkpoint

        ckpt = checkpoint.read_checkpoint(file)
        shapes = accounting.shapes_of(ckpt.state)
        try:
            variant = accounting.detect(shapes, arch)
        except InputError as exc:
            raise InputError(f"{file}: {exc}") from exc
        info = {
            "file": str(file),
            "format": ckpt.format,
            "arch": variant.name,
            "num_classes": variant.num_classes,
            "input": "normalised float32 clips (N, 3, T, H, W): apply the Kinetics transform first",
            "dtypes": ckpt.source_dtypes,
            "hash_check": ckpt.hash_check,
            "notes": ckpt.notes,
        }
    info["num_params"] = count_params(expand(variant))
    info["midplanes"] = accounting.midplanes_report(variant)  # R(2+1)D widths that differ from the formula
    info["file_size"] = file.stat().st_size
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        if value not in (None, []):
            click.echo(f"{key:12s} {', '.join(value) if isinstance(value, list) else value}")


@click.command("mapping")
@click.argument("arch")
@click.option("--num-classes", type=int, default=400, show_default=True)
@json_option
def mapping_cmd(arch: str, num_classes: int, as_json: bool) -> None:
    """Print the torch <-> Keras name mapping of ARCH, derived from the spec."""
    from vrconvert.converter.arch import families, mapping
    from vrconvert.converter.errors import InputError

    try:
        variant = families.get(arch).with_classes(num_classes)
    except KeyError as exc:
        raise InputError(exc.args[0]) from exc
    rows = mapping.table(variant)
    if as_json:
        emit_json({"arch": variant.name, "num_classes": num_classes, "entries": rows})
        return
    width = max(len(r["torch"]) for r in rows)
    for r in rows:
        keras = r["keras"] or "(torch-only buffer; written as 0)"
        perm = f"  permute {tuple(r['permutation'])}" if r["permutation"] else ""
        click.echo(f"{r['torch']:<{width}}  {tuple(r['torch_shape'])!s:<22} {keras}{perm}")
