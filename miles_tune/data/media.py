"""Images and video frames: decoding (Pillow, PyAV) and the torch-only resizes.

Images are returned as HWC uint8 RGB numpy arrays. The resizes take and return HWC
uint8 too: the float result of a bilinear resize is rounded back to uint8, which is the
*stored* form the cache keeps (four times smaller than float32); see
:mod:`miles_tune.data.transforms` for what turns it into model input.

Downscaling uses ``antialias=True`` (closer to Pillow / torchvision v2), upscaling plain
bilinear; both ``align_corners=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from miles_tune.data.errors import DatasetError, require

__all__ = [
    "center_crop",
    "read_image",
    "read_video_frame",
    "resize_hwc",
    "resize_shorter_side",
]


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file (JPEG, PNG, ...) to HWC uint8 RGB; a clear error names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing image file {path}", path)
    image_mod = require("PIL.Image", "reading images")
    try:
        with image_mod.open(path) as im:
            im.load()  # decode now: a truncated JPEG fails here, not later
            rgb = im.convert("RGB")
    except Exception as exc:  # UnidentifiedImageError, OSError("image file is truncated"), ...
        raise DatasetError(f"corrupt or unreadable image {path}: {exc}", path) from exc
    arr = np.array(rgb, dtype=np.uint8)  # a writable copy
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise DatasetError(f"image {path} decoded to an unexpected shape {arr.shape}", path)
    return arr


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.round().clamp_(0, 255).to(torch.uint8).numpy()


def resize_hwc(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HWC uint8 image to ``size`` = (H, W); antialiased when shrinking."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return np.ascontiguousarray(image)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float32)
    shrink = size[0] < h or size[1] < w
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return _to_uint8(y[0].permute(1, 2, 0))


def resize_shorter_side(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resize keeping the aspect ratio so that min(H, W) == ``shorter`` (torchvision ``Resize(int)``)."""
    h, w = image.shape[:2]
    size = (shorter, max(1, int(shorter * w / h))) if h <= w else (max(1, int(shorter * h / w)), shorter)
    return resize_hwc(image, size)


def center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Central ``size`` = (H, W) crop (torchvision's rounding of the offsets)."""
    h, w = image.shape[:2]
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"cannot crop {size} out of {(h, w)}")
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return np.ascontiguousarray(image[top : top + th, left : left + tw])


def read_video_frame(path: str | os.PathLike[str], position: float = 0.5) -> np.ndarray | None:
    """One RGB frame (HWC uint8) of a video file through PyAV (bundled FFmpeg).

    ``position`` in [0, 1] picks the frame ``floor(position * (n - 1))`` of the ``n``
    frames (0.5: the middle frame). Frames are counted by demuxing the video packets
    (no decoding), then decoded up to the chosen one. Returns ``None`` when the file
    has a video stream but no decodable frame (an empty clip); raises
    :class:`DatasetError` naming the file when it is missing, unreadable or has no
    video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing video file {path}", path)
    av = require("av", "decoding video (PyAV)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"video file {path} has no video stream", path)
            stream = container.streams.video[0]
            n = sum(1 for packet in container.demux(stream) if packet.size)
        if n == 0:
            return None
        target = int(position * (n - 1))
        frame = None
        with av.open(str(path)) as container:
            for i, decoded in enumerate(container.decode(video=0)):
                frame = decoded
                if i >= target:
                    break
        if frame is None:
            return None
        return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
    except DatasetError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise DatasetError(f"corrupt or unreadable video {path}: {exc}", path) from exc
