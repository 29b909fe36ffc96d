"""Where the YAML the package ships lives: the model zoo (``models/``) and the recipes (``configs/``).

In the repository these are top-level folders (the layout the design asks for); the wheel carries them inside
the package as ``detector/models`` and ``detector/configs`` (``setup.py`` maps them there), where
``importlib.resources`` finds them from any working directory. A source checkout (editable install or
``PYTHONPATH``) reads the repository folders in place, so there is never a second copy to keep in step.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from detector.errors import DetectorError

KINDS = ("models", "configs")


@cache
def data_dir(kind: str) -> Path:
    """The folder holding ``kind`` (``"models"`` or ``"configs"``) for this installation of ``detector``."""
    if kind not in KINDS:
        raise ValueError(f"unknown packaged folder {kind!r}; one of {KINDS}")
    package = Path(str(files("detector")))
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout / kind  # a source checkout: the repository's own folder
    installed = package / kind
    if not installed.is_dir():
        raise DetectorError(
            f"{installed}: the packaged {kind}/ folder is missing; reinstall detector (pip install detector) "
            "or run from a source checkout"
        )
    return installed
