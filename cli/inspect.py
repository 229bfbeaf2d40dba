"""`vrconvert inspect` and `vrconvert mapping`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import arch_option, emit_json, json_option


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@arch_option
@json_option
def inspect(file: Path, arch: str | None, as_json: bool) -> None:
    """Describe a checkpoint or Keras file: format, architecture, classes, parameters, dtype, hash."""
    from vrconvert.converter.conversion.describe import describe

    info = describe(file, arch)
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
