"""Samples -> the batch dict of ``docs/interfaces.md`` (``img``, ``cls``, ``bboxes``, ``batch_idx``, ...)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info


def collate(samples: list[dict]) -> dict:
    """Stack samples of one shape into a batch.

    Returns ``img`` uint8 (B, 3, H, W); ``cls`` float (N,); ``bboxes`` float (N, 4) xyxy pixels of ``img``;
    ``batch_idx`` long (N,) (which image each box belongs to); ``im_files``, ``ori_shapes``, ``ratio_pad``,
    ``image_ids``, ``ignore`` (lists, one entry per image: ignore regions in original pixels); and ``problems`` (list of ``{file, problem}`` met while
    loading, which the loader removes before handing the batch out).
    """
    counts = [len(s["cls"]) for s in samples]
    return {
        "img": stack_images([s["img"] for s in samples]),
        "cls": torch.from_numpy(np.concatenate([s["cls"] for s in samples]).astype(np.float32)),
        "bboxes": torch.from_numpy(np.concatenate([s["bboxes"] for s in samples]).astype(np.float32).reshape(-1, 4)),
        "batch_idx": torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts, dtype=torch.long)),
        "im_files": [s["im_file"] for s in samples],
        "ori_shapes": [tuple(s["ori_shape"]) for s in samples],
        "ratio_pad": [s["ratio_pad"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "ignore": [s["ignore"] for s in samples],
        "problems": [p for s in samples for p in s["problems"]],
    }


def stack_images(images: list[np.ndarray]) -> torch.Tensor:
    """Stack same-shape uint8 images ``(C, H, W)`` into one ``(B, C, H, W)`` tensor; in a loader worker, straight
    into shared memory.

    A batch a worker returns travels to the main process through shared memory; a tensor allocated there
    from the start is handed over as is, where an ordinary one would be copied once more on the way.
    """
    shape = (len(images), *images[0].shape)
    for k, img in enumerate(images):
        if img.shape != shape[1:] or img.dtype != np.uint8:
            raise ValueError(f"collate: image {k} is {img.dtype} {img.shape}, image 0 uint8 {shape[1:]}")
    if get_worker_info() is None:
        out = torch.empty(shape, dtype=torch.uint8)
    else:
        storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
        out = torch.tensor([], dtype=torch.uint8).set_(storage).view(shape)
    for dst, img in zip(out.numpy(), images):
        copy_image(dst, img)
    return out


def copy_image(dst: np.ndarray, img: np.ndarray) -> None:
    """``dst[...] = img`` for ``(3, H, W)`` uint8 arrays, where ``img`` may be the RGB CHW view of a contiguous BGR
    HWC image (what samples hold): that is de-interleaved by ``cv2.split`` (SIMD, several times faster than
    numpy's strided copy; the same bytes)."""
    bgr = img.transpose(1, 2, 0)[..., ::-1]
    if img.shape[0] == 3 and bgr.flags.c_contiguous:
        cv2.split(bgr, [dst[2], dst[1], dst[0]])
    else:
        dst[...] = img
