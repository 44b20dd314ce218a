"""Host batches built ahead of the step that needs them, in a background thread.

For data read from disk (memory-mapped shards), gathering a batch's rows waits on page
faults; done in the training thread it would stall the device between steps. The loop keeps
`depth` batches in flight: while the device runs step k, a worker gathers k+1..k+depth.
Batches are pure functions of their row indices, so the order (and a resumed run) is the
same as without prefetching.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


def prefetched(
    make: Callable[[np.ndarray], Any], rows: Iterable[np.ndarray], depth: int
) -> Iterator[Any]:
    """`make(r)` for each `r` of `rows`, in order, up to `depth` of them computed ahead
    (depth 0: computed on demand, in this thread). Leaving the loop early cancels what is
    queued; an error in `make` is raised where its batch would have been yielded."""
    if depth <= 0:
        yield from map(make, rows)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlx-prefetch")
    queued: deque[Future] = deque()
    source = iter(rows)
    try:
        for r in source:
            queued.append(pool.submit(make, r))
            if len(queued) > depth:
                yield queued.popleft().result()
        while queued:
            yield queued.popleft().result()
    finally:
        for f in queued:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
