"""``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize`` and ``Compose`` on PIL images, as
torchvision documents them (README.md says why this stands in for torchvision here)."""

import numpy as np
import torch
from PIL import Image


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class Resize:
    """The short side to ``size``, the long side to ``int(size * long / short)``, bilinear."""

    def __init__(self, size):
        self.size = int(size)

    def __call__(self, img):
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        out = (new_short, new_long) if w <= h else (new_long, new_short)
        if out == (w, h):
            return img
        return img.resize(out, Image.BILINEAR)


class CenterCrop:
    def __init__(self, size):
        self.size = int(size)

    def __call__(self, img):
        w, h = img.size
        top = round((h - self.size) / 2.0)
        left = round((w - self.size) / 2.0)
        return img.crop((left, top, left + self.size, top + self.size))


class ToTensor:
    """HWC uint8 to CHW float32 in [0, 1]."""

    def __call__(self, img):
        arr = np.array(img, copy=True)
        t = torch.from_numpy(arr).view(img.size[1], img.size[0], len(img.getbands()))
        return t.permute(2, 0, 1).contiguous().to(torch.float32).div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, tensor):
        return (tensor - self.mean) / self.std
