"""RepConv (DAMO-YOLO): a 3x3 conv-BN and a 1x1 conv-BN in parallel, summed, then an activation.

The same structure as GELAN's ``RepConvN`` (no identity branch), registered under DAMO-YOLO's name with the
YAML argument names used everywhere else (``out``, ``k``, ``s``) and a stride, so it can stand as a layer.
"""

from __future__ import annotations

from detector.nn.gelan import RepConvN
from detector.registry import BLOCKS


@BLOCKS.register()
class RepConv(RepConvN):
    """act(BN(conv3x3 x) + BN(conv1x1 x)); ``fuse()`` folds both branches into one biased 3x3 conv.

    Args:
        c1: input channels. out: output channels. k: must be 3. s: stride of both branches. g: groups.
        act: activation after the sum (``None`` for the backbone's second conv, which adds a residual first).
    Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(self, c1: int, out: int, k: int = 3, s: int = 1, g: int = 1, act: str | None = "relu") -> None:
        super().__init__(c1, out, k, s, g, act)
        self.stride_factor = float(s)
