"""Our fused GPU kernels (Triton), each a ``torch.library`` custom op with a pure-PyTorch reference beside it.

``import cuda_ops`` never fails: without CUDA or Triton every op runs its reference, and asking for a kernel
explicitly (``impl="kernel"``) says in one sentence why it cannot run. See :mod:`cuda_ops.availability`.
"""

from cuda_ops.availability import KernelStatus, KernelUnavailable, kernel_runs_on, status, use_kernel, why_not
