"""Micro-batching: concurrent requests gathered for a few milliseconds, run as one call, results split.

    batcher = MicroBatcher(run_batch, max_size=64, max_wait_ms=4, executor=torch_thread)
    result = await batcher.submit(payload, size=n_images)

`run_batch(payloads) -> results` runs in `executor` (one thread for all torch work keeps the cores
for the math); it returns one result per payload, in order, and may return an Exception instance
for a payload that failed on its own. The window opens when the oldest waiting job arrived, so a
job that queued while the previous batch ran is not delayed again.
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class _Job:
    payload: Any
    size: int
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class QueueFull(RuntimeError):
    """More work is waiting than the batcher accepts; the caller should retry later."""


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_size: int = 64, max_wait_ms: float = 4.0,
                 executor: Executor | None = None, max_pending: int | None = None):
        self.run_batch, self.max_size, self.max_wait = run_batch, max_size, max_wait_ms / 1000
        self.executor, self.max_pending = executor, max_pending
        self.batches = self.jobs = self.largest = 0  # statistics: calls of run_batch, jobs served, largest batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        """Units (images) waiting, not counting the batch that is running."""
        return sum(j.size for j in self._jobs) if self._task is not None else 0

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:  # first use, or a new event loop
            self._loop, self._jobs, self._wake = loop, collections.deque(), asyncio.Event()
            self._task = loop.create_task(self._worker())

    async def submit(self, payload: Any, size: int = 1) -> Any:
        self._ensure_worker()
        if self.max_pending is not None and self.pending + size > self.max_pending:
            raise QueueFull(f"{self.pending} images are waiting; try again shortly")
        job = _Job(payload, size, self._loop.create_future())
        self._jobs.append(job)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        batch, total = [], 0
        while self._jobs and (not batch or total + self._jobs[0].size <= self.max_size):
            job = self._jobs.popleft()
            if job.future.cancelled():  # its client went away
                continue
            batch.append(job)
            total += job.size
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._jobs[0].queued + self.max_wait
            while sum(j.size for j in self._jobs) < self.max_size and (left := deadline - time.perf_counter()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            self.batches, self.jobs = self.batches + 1, self.jobs + len(batch)
            self.largest = max(self.largest, sum(j.size for j in batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [j.payload for j in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} jobs")
            except Exception as error:  # noqa: BLE001 (handed to every caller of this batch)
                results = [error] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, RuntimeError):
                pass
            self._task = None
