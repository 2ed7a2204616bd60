"""glibc malloc settings for CPU training: keep large tensor buffers in the heap instead of mmap-ing each one.

tf.data's GeneratorDataset, which `tf.distribute`'s distributed datasets use, sets glibc's M_TRIM_THRESHOLD to
128 KB when it first runs ("Memory patch applied" in the log). Setting any malloc threshold freezes glibc's
dynamic mmap threshold at 128 KB, so from then on every tensor buffer above 128 KB is mmap-ed on allocation,
page-faulted on first touch and unmapped on free, at every step. On a CPU this made the synthetic RMI training
step 3.4x slower (90 -> 305 ms, elementwise work on multi-megabyte gate maps) and the LSTM baseline's 3x.
`keep_large_allocations` raises both thresholds to glibc's own dynamic ceiling (32 MB on 64-bit), so buffers
up to that size are reused from the heap. It costs resident memory (freed buffers stay with the process), so the
library never calls it: the `train` and `pretrain` commands have their loop call it once the input has started.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter codes
_LARGEST_HEAP_BUFFER = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems


def keep_large_allocations() -> bool:
    """Sets glibc's mmap and trim thresholds to 32 MB; returns False where there is no glibc (nothing to do)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BUFFER)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * _LARGEST_HEAP_BUFFER)
    )
