"""Our fused GPU kernels (Triton), each a ``torch.library`` custom op with a pure-PyTorch reference beside it.

``import cuda_ops`` never fails and never imports Triton: without CUDA or Triton every op runs its reference,
and asking for a kernel explicitly (``impl="kernel"``) says in one sentence why it cannot run. See
:mod:`cuda_ops.availability` and ``docs/cuda_ops.md``.

Public ops (each takes ``impl="auto" | "kernel" | "reference"``):

- :func:`letterbox_frames`: uint8 BGR frames of any sizes -> letterboxed RGB CHW batch in 0..1 + (scale, pad);
- :func:`decode_topk`: raw DFL head maps -> per-image top-K decoded candidates above a score threshold;
- :func:`ska`: LSNet small-kernel aggregation, forward and backward;
- :func:`dw_pw`: fused depthwise 3x3 + act + pointwise 1x1 + act (BN folded), NHWC.
"""

from cuda_ops.availability import KernelStatus, KernelUnavailable, kernel_runs_on, status, use_kernel, why_not
from cuda_ops.decode_topk import batched_nms, decode_topk
from cuda_ops.dw_pw import dw_pw
from cuda_ops.letterbox import letterbox_frames
from cuda_ops.ska import ska
