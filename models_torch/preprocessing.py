"""torchvision's Kinetics eval transform as a torch module, the twin of `models_tf.preprocessing`.

uint8 frames (N, T, H, W, 3) in, as a decoder gives them; torch's (N, 3, T, 112, 112) clip out. The
arithmetic is torchvision's own for tensors (`transforms.functional.resize` on a uint8 video): the frames
as float32, `F.interpolate(bilinear, align_corners=False, antialias=False)` on (frames, C, H, W) with the
channels-last strides of a permuted THWC decode, `round` (half to even), clamp, centre crop at
`round((in - out) / 2)`, /255, (x - mean) / std. Mean and std are non-persistent buffers: the state dict
keeps torchvision's keys exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vrconvert.converter.arch.spec import Preprocessing


class KineticsPreprocessing(nn.Module):
    """uint8 (N, T, H, W, 3) -> float32 (N, 3, T, crop_h, crop_w), as torchvision's `VideoClassification`."""

    def __init__(self, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.preprocessing = p = preprocessing or Preprocessing()
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p.std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def levels(self, frames: torch.Tensor) -> torch.Tensor:
        """Resized, rounded and cropped frames (N*T, 3, crop_h, crop_w), float32 holding uint8 levels."""
        if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (N, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        n, t, h, w, c = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(n * t, c, h, w).float()  # torchvision's (T, C, H, W) view
        x = F.interpolate(
            x, size=list(self.preprocessing.resized(h, w)), mode="bilinear", align_corners=False, antialias=False
        )
        x = x.round().clamp(0, 255)
        (top, left), (ch, cw) = self._offsets(h, w), self.preprocessing.crop
        return x[:, :, top : top + ch, left : left + cw]

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        """The resize's output: fixed, or (one value) torchvision's short side to it, the long side scaled."""
        size = self.preprocessing.resize
        if len(size) == 2:
            return tuple(size)
        return (int(size[0] * h / w), size[0]) if w <= h else (size[0], int(size[0] * w / h))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, t = frames.shape[:2]
        x = (self.levels(frames) / 255.0 - self.mean) / self.std
        return x.reshape(n, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def _offsets(self, height: int, width: int) -> tuple[int, int]:
        (rh, rw), (ch, cw) = self.preprocessing.resized(height, width), self.preprocessing.crop
        return round((rh - ch) / 2.0), round((rw - cw) / 2.0)
