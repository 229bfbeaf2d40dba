"""`vrconvert list` and `vrconvert build`: the spec's variants, and untrained models of them."""

from __future__ import annotations

from pathlib import Path

import click

from .options import emit_json, force_option, json_option, num_classes_option


@click.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every variant vrconvert builds and converts, with its parameter count and pretrained weights."""
    from vrconvert.converter.arch import families
    from vrconvert.converter.arch.layers import count_params

    rows = [
        {
            "arch": v.name,
            "num_params": count_params(families.expand(v)),
            "pretrained": v.pretrained is not None,
            "acc1": v.pretrained.acc1 if v.pretrained else None,
            "description": v.description,
        }
        for v in families.VARIANTS.values()
    ]
    if as_json:
        emit_json({"variants": rows})
        return
    width = max(len(r["arch"]) for r in rows)
    click.echo(f"{'arch':<{width}}  {'parameters':>11}  {'pretrained':<26}  description")
    for r in rows:
        weights = f"Kinetics-400, {r['acc1']:.1f}% top-1" if r["pretrained"] else "no"
        click.echo(f"{r['arch']:<{width}}  {r['num_params']:>11,}  {weights:<26}  {r['description']}")


@click.command("build")
@click.argument("arch")
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@num_classes_option("Width of the classifier head (default: the variant's own).")
@force_option
@json_option
def build_cmd(arch: str, dst: Path, num_classes: int | None, force: bool, as_json: bool) -> None:
    """Write an untrained ARCH to DST: .keras, .h5, .weights.h5 (Keras) or .pth, .safetensors (torch)."""
    from vrconvert.converter.conversion import convert
    from vrconvert.converter.formats.keras_io import keras_suffix

    if keras_suffix(dst):
        from vrconvert.converter.backends import select_backend_for_files

        select_backend_for_files()
    result = convert.write_untrained(arch, dst, num_classes=num_classes, force=force)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(
        f"{result.dst}: untrained {result.arch} ({result.source_format}), {result.num_classes} classes, "
        f"{result.num_params:,} parameters ({result.seconds:.1f} s)"
    )
