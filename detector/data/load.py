"""``load_split(data, split)``: any supported dataset -> one validated ``LabelSet``, read once and cached."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

from detector.data import validate
from detector.data.cache import cache_files, fingerprint, load_labels_cache, save_labels_cache
from detector.data.formats import get_format, thread_map
from detector.data.image_io import MIN_SIDE
from detector.data.labels import ImageLabels, LabelSet
from detector.data.spec import DatasetSpec, resolve_dataset
from detector.data.validate import validate_record
from detector.errors import DetectorError

LOG = logging.getLogger("detector.data")


def load_split(data: str | Path | dict | DatasetSpec, split: str, *, cache: bool = True) -> LabelSet:
    """Read, validate and cache split ``split`` of ``data`` (YAML file, mapping, VOC folder or config name).

    Images that cannot be used are left out and reported in ``.problems`` (a list of ``{file, problem}``);
    a split without a single usable image raises ``DetectorError``.
    """
    spec = resolve_dataset(data)
    fmt = get_format(spec.format)
    sources = fmt.sources(spec, split)
    rules = [validate.CLIP_TOLERANCE, validate.MIN_SIZE, validate.DUPLICATE_IOU, MIN_SIDE, "unique-ids"]
    digest = fingerprint(sources, extra=[spec.format, spec.names, spec.entry(split), rules, spec.difficult])
    files = cache_files(spec.root, f"{spec.format}-{split}-{_entry_tag(spec.entry(split))}")
    if cache and (hit := load_labels_cache(files, digest)) is not None:
        _warn_names(fmt, spec, hit.names)
        return hit
    names, category_ids = fmt.names(spec)
    records, problems = fmt.records(spec, split, names)
    results = thread_map(lambda r: validate_record(r, names), records, desc=f"scanning {split} labels")
    images = []
    for labels, found in results:
        problems += found
        if labels is not None:
            images.append(labels)
    unique_image_ids(images, Path(spec.root))
    out = LabelSet(names, images, problems, category_ids, root=str(spec.root), format=spec.format)
    if not images:
        detail = f"; first problem: {problems[0]['file']}: {problems[0]['problem']}" if problems else ""
        raise DetectorError(
            f"{spec.source}: split {split!r} has no usable images ({len(records)} listed, {len(problems)} problems){detail}"
        )
    if cache and save_labels_cache(files, digest, out) is None:
        LOG.warning("could not write a label cache for %s split %r (tried %s)", spec.source, split, files)
    _warn_names(fmt, spec, names)
    return out


def unique_image_ids(images: list[ImageLabels], root: Path) -> None:
    """Give images that share a file-stem id (``a/x.jpg``, ``b/x.jpg``) their path below ``root`` instead.

    COCO ids are the annotation file's and stay; stems are what YOLO and VOC data use, and two images in
    different folders may share one, which would merge them under one ``image_id`` in ``predictions.json``.
    """
    counts = Counter(im.image_id for im in images if isinstance(im.image_id, str))
    taken = set(counts)
    for im in images:
        if isinstance(im.image_id, str) and counts[im.image_id] > 1:
            p = Path(im.file)
            try:
                rel = p.resolve().relative_to(root.resolve())
            except ValueError:
                rel = p
            new = rel.with_suffix("").as_posix()
            im.image_id = new if new not in taken else rel.as_posix()  # x.jpg and x.png side by side
            taken.add(im.image_id)


def _warn_names(fmt, spec: DatasetSpec, names: list[str]) -> None:
    """Every load (cached or not) says which classes were inferred and which look like typos of each other."""
    for i, text in enumerate(fmt.name_warnings(spec, names)):
        (LOG.info if i == 0 else LOG.warning)(text)


def _entry_tag(entry: object) -> str:
    return hashlib.sha1(repr(entry).encode()).hexdigest()[:8]
