"""Run the small models with few threads.

SERE's tensors are small: one thread is as fast as two on an idle machine and many times faster on
a busy one, where OpenMP/BLAS worker threads spin-wait for cores that other processes hold
(measured: a 30-step fit took 0.7 s with one thread and 9-50 s with two under load). The limit is
set for the duration of a call and restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def limited_threads(n: int | None) -> Iterator[None]:
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    n = min(n, os.cpu_count() or 1)  # more threads than cores only wait for each other
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
