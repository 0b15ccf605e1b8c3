"""Dynamic batching: requests for one model that arrive within a few milliseconds of each other are decoded as one
batch, by one call of the task object's batched method, in the model's own thread (the event loop stays free:
health checks answer while a batch decodes). Requests batch only with others of the same kind (their search
settings), so that each gets exactly the answer it would get alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Run = Callable[[Hashable, list[Any]], Sequence[Any]]  # (kind, requests) -> one answer per request
POLL = 0.001  # seconds between looks at the queue while a batch gathers


class QueueFull(Exception):
    """More requests wait for this model than the server keeps: the client should retry later."""


@dataclass
class _Waiting:
    kind: Hashable
    request: Any
    size: int  # inputs it brings to a batch (sentences, samples, pictures)
    answer: asyncio.Future = field(repr=False)


class Batcher:
    """A queue per model and one worker that takes what waits: up to `max_batch` inputs of one kind, gathered for
    at most `max_wait` seconds after the first, run as one batch. `max_batch` 1 decodes each request alone."""

    def __init__(self, name: str, run: Run, max_batch: int, max_wait: float, max_queue: int):
        self.name, self.run = name, run
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.executor: ThreadPoolExecutor | None = None
        self.queue: asyncio.Queue[_Waiting] | None = None
        self.worker: asyncio.Task | None = None
        self.batches: list[int] = []  # how many requests each batch held (what tests and benchmarks look at)

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-model")  # one batch at a time
        self.queue = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._serve(), name=f"{self.name} batcher")

    async def stop(self) -> None:
        """Finish what is queued (requests in flight get their answers), then stop."""
        if self.queue is not None and self.worker is not None:
            await self.queue.join()
            self.worker.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    async def submit(self, kind: Hashable, request: Any, size: int = 1) -> Any:
        """The answer to `request`, decoded in a batch with others of the same kind."""
        assert self.queue is not None, "start() the batcher first"
        if self.queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.queue.qsize()} requests wait for the {self.name} model")
        waiting = _Waiting(kind, request, size, asyncio.get_running_loop().create_future())
        await self.queue.put(waiting)
        return await waiting.answer

    async def _serve(self) -> None:
        assert self.queue is not None
        held: list[_Waiting] = []  # taken from the queue, of another kind than the batch being gathered
        while True:
            first = held.pop(0) if held else await self.queue.get()
            batch, size, deadline = [first], first.size, time.monotonic() + self.max_wait
            while size < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    if (left := deadline - time.monotonic()) <= 0:
                        break
                    await asyncio.sleep(min(left, POLL))  # (polled: a timed-out get could drop a request)
                    continue
                if nxt.kind == first.kind and size + nxt.size <= self.max_batch:
                    batch.append(nxt)
                    size += nxt.size
                else:
                    held.append(nxt)
            await self._run(batch)

    async def _run(self, batch: list[_Waiting]) -> None:
        assert self.queue is not None
        self.batches.append(len(batch))
        try:
            answers = await self._decode(batch)
        except Exception as err:  # bad input that only the model could see: each request alone, so that only
            answers = [err] if len(batch) == 1 else [await self._alone(w) for w in batch]  # its own hears it
        for waiting, answer in zip(batch, answers):
            if not waiting.answer.done():  # (a client that left has cancelled its own)
                if isinstance(answer, Exception):
                    waiting.answer.set_exception(answer)
                else:
                    waiting.answer.set_result(answer)
            self.queue.task_done()

    async def _decode(self, batch: list[_Waiting]) -> Sequence[Any]:
        assert self.executor is not None
        requests = [w.request for w in batch]
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, batch[0].kind, requests)

    async def _alone(self, waiting: _Waiting) -> Any:
        try:
            return (await self._decode([waiting]))[0]
        except Exception as err:
            return err
