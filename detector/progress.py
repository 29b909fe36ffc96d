"""Progress bars (tqdm) for the long loops: training epochs, validation, label scanning, image caching, export.

One switch for all of them: ``verbose=False`` on a mode (``TrainConfig.verbose``, ``ValRunConfig.verbose``,
``export(..., verbose=False)`` ...) calls ``set_verbose(False)`` or runs under ``quiet()``; the environment
variable ``DETECTOR_VERBOSE=0`` sets the default. Bars write to stderr, so ``--json`` output stays clean.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_verbose = os.environ.get("DETECTOR_VERBOSE", "1").lower() not in ("0", "false", "no")


def enabled() -> bool:
    """Whether progress bars are shown."""
    return _verbose


def set_verbose(flag: bool) -> None:
    global _verbose
    _verbose = bool(flag)


@contextlib.contextmanager
def quiet(flag: bool = True) -> Iterator[None]:
    """Within the block, bars are off (``flag=True``) or left as they are (``flag=False``)."""
    before = _verbose
    if flag:
        set_verbose(False)
    try:
        yield
    finally:
        set_verbose(before)


def bar(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, unit: str = "it", **kw):
    """A tqdm bar over ``iterable`` (or a manual one with ``total``), silent when progress is off."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not _verbose, dynamic_ncols=True, **kw)


@contextlib.contextmanager
def stages(desc: str, names: list[str]) -> Iterator[Callable[[str], None]]:
    """A bar over named steps: call ``stage(name)`` as each begins; the bar fills as the next one starts and
    completes when the block ends without an error."""
    b = bar(desc=desc, total=len(names), unit="step", leave=False)
    started = False

    def stage(name: str) -> None:
        nonlocal started
        if started:
            b.update(1)
        started = True
        b.set_postfix_str(name)

    try:
        yield stage
        b.update(b.total - b.n)
    finally:
        b.close()
