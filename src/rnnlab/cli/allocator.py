"""Keep freed memory for reuse: glibc's malloc settings for training on the CPU.

glibc serves an allocation above its mmap threshold (which it adapts, up to 32 MB) with
a fresh ``mmap`` and unmaps it on free. A training step's largest tensors, the full
softmax's logits and their gradient (batch x steps x vocabulary floats: 93 MB for the
PyTorch word_language_model recipe on WikiText-2), are then page-faulted in and zeroed
by the kernel anew on every step. With both thresholds at 1 GB, freed blocks stay in
the heap for the next step (the recipe's plain loop: 1.48x the tokens/s on a 2-vCPU
Intel Xeon, README "Training throughput"). The price: the process's resident memory
does not shrink back after its peak. Where the C library is not glibc, nothing changes.
"""

from __future__ import annotations

import ctypes
import platform

#: mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap and stay there once freed
LIMIT = 1 << 30


def keep_freed_memory(limit: int = LIMIT) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes; True if glibc took both."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
