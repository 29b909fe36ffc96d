"""What a large-scale predict runs over: a folder, a glob, a list file, or a Parquet file of paths -> paths.

Ray reads nothing itself here: the driver turns the source into a list of image paths (so the output can be
checked to hold one row per input image), and the actors decode each image, so a corrupt file becomes a row
with its error instead of a failed task.
"""

from __future__ import annotations

from pathlib import Path

from detector.errors import DetectorError
from detector.predict.sources import IMAGE_SUFFIXES, expand_paths

LIST_SUFFIXES = {".txt", ".lst", ".list"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
PATH_COLUMNS = ("path", "image", "file", "filename")


def list_images(source: str | Path | list) -> list[str]:
    """Image paths of ``source``, in a stable order.

    ``source`` is a directory (its image files, sorted), a glob, one image, a ``.txt`` list file (one path a
    line, relative paths taken from the list's folder, ``#`` comments and blank lines ignored), a Parquet file
    with a ``path`` column (or ``image``/``file``/``filename``), or a Python list of paths. Paths in a list or
    Parquet file are not opened here: a missing or corrupt one becomes an output row with its error.
    """
    if isinstance(source, (list, tuple)):
        if not source:
            raise DetectorError("predict: the source list is empty")
        return [str(p) for p in source]
    p = Path(str(source))
    suffix = p.suffix.lower()
    if p.is_file() and suffix in LIST_SUFFIXES:
        return _from_list_file(p)
    if p.is_file() and suffix in PARQUET_SUFFIXES:
        return _from_parquet(p)
    paths = [str(f) for f in expand_paths(source) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DetectorError(f"{source}: no images (engine=ray runs on images; use engine=local for videos)")
    return paths


def _from_list_file(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    paths = [ln for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise DetectorError(f"{path}: the list file names no images")
    return [p if Path(p).is_absolute() else str(path.parent / p) for p in paths]


def _from_parquet(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means "not a Parquet file we can read"
        raise DetectorError(f"{path}: not a readable Parquet file ({e})") from None
    column = next((c for c in PATH_COLUMNS if c in table.column_names), None)
    if column is None:
        raise DetectorError(
            f"{path}: no column of image paths (looked for {', '.join(PATH_COLUMNS)}; found {table.column_names})"
        )
    paths = [str(p) for p in table.column(column).to_pylist() if p]
    if not paths:
        raise DetectorError(f"{path}: column {column!r} holds no paths")
    return paths
