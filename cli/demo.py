"""`vrconvert demo`: the main job on an embedded default, needing no download and no shared files.

It converts a torchvision-format r2plus1d_18 checkpoint to Keras and back: torchvision's pretrained
file when it is already in torch's hub cache, otherwise one generated here (random weights and
BatchNorm statistics, saved exactly as torchvision saves a state dict).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from vrconvert.converter.arch import spec


@click.command()
@click.option(
    "--arch",
    type=click.Choice(list(spec.VARIANTS)),
    default="r2plus1d_18",
    show_default=True,
    help="Variant to convert.",
)
@click.option(
    "--out",
    "out_dir",
    default="out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the files the demo writes.",
)
def demo(arch: str, out_dir: Path) -> None:
    """Convert a checkpoint torch -> Keras -> torch and report logits parity and the round trip."""
    import torch

    from vrconvert import models_torch
    from vrconvert.converter.arch import families
    from vrconvert.converter.conversion import convert
    from vrconvert.converter.formats.download import hub_dir

    from .convert import _report

    variant = families.get(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    cached = hub_dir() / variant.pretrained.filename if variant.pretrained else None
    if cached is not None and cached.is_file():
        src = cached
        click.echo(f"using torchvision's pretrained checkpoint {src}")
    else:
        src = out_dir / f"{arch}_generated.pth"
        torch.manual_seed(0)  # reproducible demo figures
        model = models_torch.build(arch).eval()
        rng = np.random.default_rng(0)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name.endswith("running_mean"):
                    buf.copy_(torch.from_numpy(rng.normal(0, 0.1, buf.shape).astype(np.float32)))
                elif name.endswith("running_var"):
                    buf.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, buf.shape).astype(np.float32)))
        torch.save(model.state_dict(), src)
        where = f"no pretrained file in {cached.parent}" if cached else f"torchvision publishes no weights for {arch}"
        click.echo(f"{where}: generated {src} (random weights, torchvision format)")

    dst = out_dir / f"{arch}.keras"
    _report(convert.torch_to_keras(src, dst, force=True), as_json=False)
    back = out_dir / f"{arch}_roundtrip.pth"
    convert.keras_to_torch(dst, back, force=True)
    original = torch.load(src, weights_only=True)
    returned = torch.load(back, weights_only=True)
    compared = [k for k in original if not k.endswith("num_batches_tracked")]  # torch-only counters
    same = list(returned) == list(original) and all(torch.equal(original[k], returned[k]) for k in compared)
    click.echo(
        f"round trip {src.name} -> {dst.name} -> {back.name}: "
        f"{'bit-exact' if same else 'DIFFERS'} on all {len(compared)} weights and statistics"
    )
    if not same:
        raise SystemExit(1)
