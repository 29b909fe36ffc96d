"""``Int8Options``: what ``detector export int8=True`` is told, checked before any work starts."""

from __future__ import annotations

from dataclasses import dataclass

from detector.config import ConfigError

CALIB_METHODS = ("minmax", "entropy", "percentile")
FREE = "free"


@dataclass
class Int8Options:
    """Post-training INT8 quantization settings.

    Attributes:
        data: dataset whose train split provides the calibration images (a config name, YAML or folder).
        calib: number of calibration images, or ``"free"`` for images synthesised from the checkpoint's
            BatchNorm statistics (no data needed).
        method: activation range calibration: ``minmax``, ``entropy`` (KL divergence) or ``percentile``.
        percentile: the percentile of ``|x|`` kept when ``method="percentile"``.
        keep_float: budget of extra convolutions kept in float, chosen by the per-layer sensitivity pass
            (0 skips the pass); the head's prediction convs, DFL and decode are always float.
        sensitivity_images: calibration images the sensitivity pass measures output error on.
        free_images: how many images ``calib="free"`` synthesises.
        free_steps: optimisation steps per synthetic batch for ``calib="free"``.
        clip_weights: per output channel, clip the fused conv weights to this many standard deviations
            before quantizing (0 = off), the remedy for outlier weights of merged re-parameterised branches.
        seed: which calibration images are drawn, and the synthetic images' start.
    """

    data: str | None = None
    calib: int | str = 200
    method: str = "minmax"
    percentile: float = 99.999
    keep_float: int = 4
    sensitivity_images: int = 8
    free_images: int = 32
    free_steps: int = 200
    clip_weights: float = 0.0
    seed: int = 0

    @property
    def data_free(self) -> bool:
        return self.calib == FREE

    def check(self, half: bool = False) -> Int8Options:
        """Stop with one sentence on a setting that cannot work; returns ``self``."""
        if half:
            raise ConfigError("export: int8=True and half=True exclude each other; choose one precision")
        if isinstance(self.calib, str) and self.calib != FREE:
            raise ConfigError(f"export: calib={self.calib!r}; give a number of images (e.g. calib=200) or calib=free")
        if not self.data_free and not self.data:
            raise ConfigError(
                "export: int8=True needs calibration images: pass data=DATASET (its train split is used) "
                "or calib=free to synthesise them from the checkpoint's BatchNorm statistics"
            )
        if not self.data_free and int(self.calib) < 1:
            raise ConfigError(f"export: calib={self.calib} must be at least 1 image")
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"export: calib_method={self.method!r}; choose one of {list(CALIB_METHODS)}")
        if min(self.sensitivity_images, self.free_images, self.free_steps) < 1:
            raise ConfigError("export: sensitivity_images, free_images and free_steps must be >= 1")
        if self.keep_float < 0 or self.clip_weights < 0:
            raise ConfigError("export: keep_float and clip_weights must be >= 0")
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"export: percentile={self.percentile} must lie in (50, 100]")
        return self


def resolve_int8(
    int8: bool | Int8Options, data: str | None, calib: int | str, half: bool = False
) -> Int8Options | None:
    """``export``'s ``int8``/``data``/``calib`` arguments -> checked options, or None for a float export."""
    if not int8:
        return None
    opts = int8 if isinstance(int8, Int8Options) else Int8Options()
    if data is not None:
        opts.data = str(data)
    if calib != 200 or isinstance(int8, bool):
        opts.calib = calib
    return opts.check(half)
