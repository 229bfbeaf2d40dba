"""Reading a torch checkpoint into a torch model: the step both the converter (its parity check) and
the validator need, kept below both so neither imports the other."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import accounting, mapping, spec, swin3d, swin3d_mapping
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import checkpoint


def load_state(src: str | Path, arch: str | None = None) -> tuple[checkpoint.Checkpoint, spec.Arch]:
    """A checkpoint read, normalised and strictly accounted for against its (detected) architecture."""
    ckpt = checkpoint.read_checkpoint(src)
    variant = accounting.detect(accounting.shapes_of(ckpt.state), arch)
    if isinstance(variant, swin3d.Swin3D) and (wrong := swin3d_mapping.wrong_buffers(variant, ckpt.state)):
        raise InputError(f"{src}: {wrong[0]} is not torchvision's relative position index for its window")
    return ckpt, variant


def torch_model_from_state(variant: spec.Arch, state: dict[str, np.ndarray]):
    """The torch model of `variant` (eval mode) with `state` loaded strictly (buffers completed)."""
    import torch

    from vrconvert import models_torch

    model = models_torch.build(variant, num_classes=variant.num_classes).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only (memory-mapped) arrays: load_state_dict copies them
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in mapping.complete(variant, state).items()}
    model.load_state_dict(tensors, strict=True)
    return model
