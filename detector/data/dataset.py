"""``DetectionDataset``: labelled images -> training samples (augmented) or validation samples (letterboxed).

A sample is a dict: ``img`` (ndarray[3, H, W] uint8 RGB; a view of the BGR image the pipeline made, which
collate copies into the batch), ``cls`` (ndarray[N] float32), ``bboxes``
(ndarray[N, 4] float32, xyxy pixels of ``img``), ``im_file``, ``ori_shape`` ``(h0, w0)``, ``ratio_pad``
``(ratio, (padw, padh))`` with ``original = (box - pad) / ratio``, ``image_id``, ``ignore`` (the image's ignore
regions for the evaluator, in original pixels: ``(boxes (K, 4) xyxy, cls (K,), crowd (K,) bool)``; never
augmented, never targets), and ``problems`` (images that failed to decode while building this sample; the
loader moves them to ``dataset.problems``).

Validation samples are exact: ``ratio_pad`` maps boxes back to the original image. Training samples are
augmented; their ``ratio_pad`` describes only the initial resize (pad 0).

Images are decoded and augmented in OpenCV's BGR order and turned into RGB by the one copy that makes the
batch channel-first, so no separate colour conversion runs per decoded image.

Randomness: each sample draws from ``numpy.random.default_rng((seed, epoch, index))``, so it does not depend on
which worker builds it or in what order. With ``augment.mosaic_partners: batch`` (the default) mosaic and
mixup partners are drawn from the sample's own batch (``batch_groups``, given by the sampler each epoch), so a
sample also depends on the batch size. The epoch and the batches live in shared memory, so ``set_epoch``
reaches persistent workers too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from detector.data.augment import AugmentConfig, TrainAugment
from detector.data.batch_groups import BatchGroups
from detector.data.image_cache import ImageCache
from detector.data.image_io import ImageReadError, read_image, resize_long_side
from detector.data.labels import ImageLabels, LabelSet, Problem, problem
from detector.data.recent_images import RecentImages, recent_capacity
from detector.data.samplers import rect_shapes
from detector.data.targets import Targets
from detector.errors import DetectorError
from detector.ops import PreprocessSpec
from detector.ops.letterbox import apply_letterbox

LOG = logging.getLogger("detector.data")
MAX_REPLACEMENTS = 16
"""How many further images to try when an image fails to decode before giving up with an error."""


class DetectionDataset(Dataset):
    """Samples of one split (see the module docstring).

    Args:
        labels: the split's validated labels (``load_split``).
        imgsz: training size (multiple of ``stride``); images are first scaled so their longer side is this.
        augment: training augmentation, or None for validation samples.
        rect: rectangular batches (images grouped by aspect ratio, padded per batch); needs ``batch``.
        batch: batch size, for the rectangular shapes and the batches mosaic partners come from.
        cache: ``"ram"``, ``"disk"`` or None: keep resized decoded images.
    """

    def __init__(
        self,
        labels: LabelSet,
        *,
        imgsz: int = 640,
        augment: AugmentConfig | None = None,
        rect: bool = False,
        batch: int = 16,
        stride: int = 32,
        seed: int = 0,
        cache: str | None = None,
    ) -> None:
        if imgsz % stride:
            raise DetectorError(f"imgsz {imgsz} must be a multiple of the stride {stride}")
        self.label_set = labels
        self.labels: list[ImageLabels] = labels.images
        self.names: list[str] = list(labels.names)
        self.category_ids: list[int] = list(labels.category_ids)
        self.problems: list[Problem] = list(labels.problems)
        self.imgsz, self.stride, self.seed, self.rect = imgsz, stride, seed, rect
        # validation samples: the same letterbox as Detector/deploy; rect batches pad to their common shape
        self.spec = PreprocessSpec(imgsz, stride, auto=rect)
        self.augment = augment
        self.transform = TrainAugment(augment, imgsz, bgr=True) if augment is not None else None
        self.order, self.batch_shapes = (
            rect_shapes([im.shape for im in self.labels], batch, self.spec) if rect else (None, None)
        )
        # [epoch, mosaic on]: shared memory, so persistent workers see changes made in the main process
        self._state = torch.tensor([0, int(augment is not None and augment.mosaic > 0)], dtype=torch.int64)
        self._state.share_memory_()
        self.total_epochs: int | None = None
        self._mosaic_closed = False
        self.sampler = None  # set by build_dataloader; set_epoch forwards to it
        # the epoch's batches (the sampler assigns them), where mosaic partners come from; None: anywhere
        partners_in_batch = augment is not None and augment.mosaic > 0 and augment.mosaic_partners == "batch"
        self.batch_groups = BatchGroups(len(self.labels), batch) if partners_in_batch and not rect else None
        self._failed: set[int] = set()  # per process: images known not to decode
        self._targets: dict[int, Targets] = {}  # per process: each image's boxes at the training scale
        self._new_problems: list[Problem] = []
        self.image_cache = None
        # training only (validation reads each image once an epoch), and not needed with a full cache
        keep = recent_capacity(len(self.labels), batch, imgsz) if augment is not None and not cache else 0
        self.recent = RecentImages(keep)
        if cache:
            self.image_cache = ImageCache(
                cache, [im.file for im in self.labels], [im.shape for im in self.labels], imgsz, Path(labels.root)
            )
            n = self.image_cache.fill(lambda i: resize_long_side(read_image(self.labels[i].file, bgr=True), imgsz)[0])
            LOG.info("cached %d/%d images (%s)", n, len(self.labels), cache)

    def __len__(self) -> int:
        return len(self.labels)

    # --- epochs -------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._state[0])

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._state[1])

    def set_epoch(self, epoch: int, total_epochs: int | None = None) -> None:
        """Start epoch ``epoch`` (0-based): new augmentation draws and sampler order; with ``total_epochs``,
        mosaic and mixup switch off for the last ``augment.close_mosaic`` epochs."""
        if total_epochs is not None:
            self.total_epochs = total_epochs
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self._apply_epoch(epoch)

    def close_mosaic(self) -> None:
        """Turn mosaic and mixup off for good (later ``set_epoch`` calls do not turn them back on)."""
        self._mosaic_closed = True
        self._state[1] = 0

    def _apply_epoch(self, epoch: int) -> None:
        self._state[0] = epoch
        a = self.augment
        if a is not None and a.mosaic > 0 and self.total_epochs is not None and not self._mosaic_closed:
            self._state[1] = int(epoch < self.total_epochs - a.close_mosaic)

    # --- samples ------------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        index, img, ratio = self._load_usable(index)
        im = self.labels[index]
        if self.transform is None:
            # the inference contract: the image is already scaled by the spec (load_image), only padded here
            plan = self.spec.plan(*im.shape, self.batch_shapes[index] if self.batch_shapes else None)
            img = apply_letterbox(img, plan, self.spec.pad_value)
            boxes = im.boxes * plan.ratio + np.array([*plan.pad, *plan.pad], dtype=np.float32)
            cls, ratio_pad = im.cls, plan.ratio_pad
        else:
            shape = self.batch_shapes[index] if self.batch_shapes else None
            first = [(index, img, ratio)]  # the image already loaded is the first one the pipeline asks for

            def load(i: int) -> tuple[np.ndarray, Targets]:
                j, im_j, r_j = first.pop() if first and first[0][0] == i else self._load_usable(i)
                return im_j, self._resized_targets(j, r_j)

            mosaic = self.mosaic_enabled and not self.rect
            pool = self.batch_groups.members(index) if mosaic and self.batch_groups is not None else None
            img, t = self.transform(load, index, len(self), rng, mosaic=mosaic, shape=shape, pool=pool)
            boxes, cls, ratio_pad = t.boxes, t.cls, (ratio, (0, 0))
        found, self._new_problems = self._new_problems, []
        return {
            "img": chw_rgb(img),
            "cls": cls.astype(np.float32),
            "bboxes": boxes.astype(np.float32).reshape(-1, 4),
            "im_file": im.file,
            "ori_shape": im.shape,
            "ratio_pad": ratio_pad,
            "image_id": im.image_id,
            "ignore": (im.ignore_boxes, im.ignore_cls, im.ignore_crowd),
            "problems": found,
        }

    def _resized_targets(self, index: int, ratio: float) -> Targets:
        """Image ``index``'s boxes at the resized image's scale, computed once per process (read-only arrays:
        augmentation always makes new ones)."""
        t = self._targets.get(index)
        if t is None:
            lab = self.labels[index]
            t = Targets.of(lab.cls, lab.boxes).scaled(ratio, ratio)
            for a in (t.cls, t.boxes, t.ref_area):
                a.flags.writeable = False
            self._targets[index] = t
        return t

    def load_image(self, index: int) -> tuple[np.ndarray, float]:
        """Image ``index`` (BGR) resized so its longer side is ``imgsz``, and the ratio used; may be a read-only
        array shared with the recent-image store. Raises ``ImageReadError``."""
        h0, w0 = self.labels[index].shape
        ratio = self.imgsz / max(h0, w0)
        if self.image_cache is not None and (img := self.image_cache.get(index)) is not None:
            return img, ratio
        if (recent := self.recent.get(index)) is not None:
            return recent
        img = read_image(self.labels[index].file, bgr=True)
        if img.shape[:2] != (h0, w0):
            raise ImageReadError(f"decodes to {img.shape[1]}x{img.shape[0]}, but was {w0}x{h0} when labels were read")
        img = resize_long_side(img, self.imgsz)[0]
        self.recent.put(index, img, ratio)
        return img, ratio

    def _load_usable(self, index: int) -> tuple[int, np.ndarray, float]:
        """``(index used, image, ratio)``: ``index`` itself, or the next image that decodes if it does not."""
        n = len(self.labels)
        for k in range(MAX_REPLACEMENTS + 1):
            i = (index + k) % n
            if i in self._failed:
                continue
            try:
                img, ratio = self.load_image(i)
                return i, img, ratio
            except ImageReadError as e:
                self._failed.add(i)
                self._new_problems.append(problem(self.labels[i].file, f"{e}; replaced by another image at load time"))
        raise DetectorError(
            f"{MAX_REPLACEMENTS + 1} images in a row failed to decode, starting at {self.labels[index].file}"
        )


def chw_rgb(img: np.ndarray) -> np.ndarray:
    """``img (ndarray[H, W, 3])`` BGR -> ``ndarray[3, H, W]`` RGB as a view, no copy: ``collate`` copies it into
    the batch once, de-interleaving with OpenCV (``collate.copy_image``)."""
    return img[..., ::-1].transpose(2, 0, 1)
