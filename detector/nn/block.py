"""Base classes for every layer a model YAML can name.

Contract for a registered block (see ``detector.model``):

* ``__init__(c1, **args)``: ``c1`` is the input width (``int``) for a single input, or a list of widths when
  the YAML ``from`` names several layers. Everything else comes from the YAML mapping.
* ``self.c2``: the output width, set in ``__init__`` (a tuple of widths for blocks that return a tuple).
* ``stride_factor``: output stride = input stride x ``stride_factor``; blocks with several inputs override
  ``out_stride`` to check that the inputs line up.
* ``fuse()``: turn the block into its deploy form in place (BN folding, re-parameterisation). The default
  does nothing; ``DetectionModel.to_deploy`` calls it on every block.
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """A layer of the YAML graph (see the module docstring for the contract)."""

    c2: int | tuple[int, ...]
    stride_factor: float = 1.0

    def out_stride(self, in_strides: list[float]) -> float:
        """Stride of this block's output relative to the input image, given its inputs' strides."""
        return in_strides[0] * self.stride_factor

    def fuse(self) -> None:
        """Convert to the deploy form in place; blocks without a fusable part keep the default no-op."""


class Head(Block):
    """A detection head: raw per-level maps in training, decoded ``(B, 4 + nc, A)`` boxes+scores in eval.

    The builder passes ``nc`` and the input ``strides`` to every ``Head``; ``loss`` names the entry of
    ``detector.registry.LOSSES`` the trainer builds for it, and ``loss_weight`` scales it (PGI aux heads: 0.25).

    Raw map layout shared by all heads, so losses are head-agnostic: channels ``[0, 4 * bins)`` are the
    left/top/right/bottom distance distributions (``bins`` DFL bins each, in stride units), channels
    ``[4 * bins, 4 * bins + nc)`` the class logits. Anchor points sit at ``(i + anchor_offset) * stride``.
    """

    loss: str = "tal"
    bins: int = 16
    anchor_offset: float = 0.5

    def __init__(self, nc: int, strides: list[float], loss_weight: float = 1.0) -> None:
        super().__init__()
        self.nc = nc
        self.strides = [float(s) for s in strides]
        self.loss_weight = float(loss_weight)
        self.c2 = 4 + nc

    def forward_raw(self, xs: list[Tensor]) -> list[Tensor]:
        """Per-level raw maps, what the loss reads: ``[(B, no, H_i, W_i)]``."""
        raise NotImplementedError

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Raw maps -> ``(B, 4 + nc, A)``: xyxy boxes in input pixels, then class scores in 0..1."""
        raise NotImplementedError

    def forward(self, xs: list[Tensor]) -> list[Tensor] | Tensor:
        maps = self.forward_raw(xs)
        return maps if self.training else self.decode(maps)
