"""Detection losses and label assigners. Importing this package registers every loss in ``LOSSES``."""

from detector.losses import aota_loss, tal_loss  # noqa: F401
from detector.losses.aota_loss import AlignedOTALoss, AlignedOTALossConfig
from detector.losses.tal_loss import LossConfig, TaskAlignedLoss

__all__ = ["AlignedOTALoss", "AlignedOTALossConfig", "LossConfig", "TaskAlignedLoss"]
