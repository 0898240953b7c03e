"""Augmentation on tensors already on the training device, drawn from a seeded generator.

Random crop with zero padding (of the *raw* image, so the padding value is the normalized value
of a black pixel, −mean/std, as torchvision's ``RandomCrop`` on the unnormalized image gives) and
horizontal flip with probability ½. The draws are a pure function of the seed handed in, so the
batch of step t is reproducible from (run seed, t) and a resumed run augments exactly as an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int  # 0: no crop
    flip: bool
    pad_value: tuple[float, ...]  # per channel: the normalized value of 0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def augment(images: torch.Tensor, augmentation: Augmentation, seed: int) -> torch.Tensor:
    """Augmented copy of ``images`` [N, C, H, W]."""
    generator = torch.Generator().manual_seed(seed)
    count, channels, height, width = images.shape
    out = images
    if augmentation.crop_padding:
        pad = augmentation.crop_padding
        fill = torch.tensor(augmentation.pad_value, dtype=images.dtype, device=images.device).view(
            1, channels, 1, 1
        )
        padded = F.pad(images - fill, (pad, pad, pad, pad)) + fill  # zero padding of the raw image
        offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator).to(images.device)
        rows = (offsets[:, 0, None] + torch.arange(height, device=images.device))[:, None, :, None]
        cols = (offsets[:, 1, None] + torch.arange(width, device=images.device))[:, None, None, :]
        samples = torch.arange(count, device=images.device)[:, None, None, None]
        out = padded[samples, torch.arange(channels, device=images.device)[None, :, None, None], rows, cols]
    if augmentation.flip:
        flips = (torch.rand(count, generator=generator) < 0.5).to(images.device)
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out


AUGMENTATION_STREAM = 0xA0
DROPOUT_STREAM = 0xD0
SEARCH_STREAM = 0x5B


def batch_seed(training_seed: int, step: int, stream: int = AUGMENTATION_STREAM) -> int:
    """A seed for step ``step``'s draws of one kind: augmentation (the line probe re-creates them),
    dropout, search batches."""
    return int(np.random.SeedSequence([training_seed, step, stream]).generate_state(1)[0])
