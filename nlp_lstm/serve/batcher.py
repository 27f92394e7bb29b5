"""Dynamic batching: concurrent requests to one model, gathered into one predictor call.

Each model has one inference thread (torch never runs on the server's event loop). When
the thread is free it takes every request queued meanwhile, up to ``max_batch_size``
inputs, and waits at most ``max_wait_ms`` for more only while other requests have been
submitted but not queued yet (a lone request runs at once: nobody else is coming);
requests with the same options then run as one call, which the predictor sorts by length. Results go back to each request in its own order, so an answer
never depends on what it was batched with. A request whose client has gone is dropped
before it costs model time; a call that fails is retried request by request, so one bad
request fails alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nlp_lstm.contract import Predictor

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """One request waiting for the model: its inputs, options and the future to answer."""

    inputs: list[Any]
    options: dict[str, Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    key: str = field(init=False)  # requests with equal keys may share a call

    def __post_init__(self) -> None:
        self.key = json.dumps(self.options, sort_keys=True)

    def answer(self, result: list[Any] | None = None, error: BaseException | None = None) -> None:
        """Hand the result (or error) to the request's event loop (the inference thread
        counts it answered)."""

        def settle() -> None:
            if self.future.done():  # cancelled: the client went away
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class Batcher:
    """The inference thread of one predictor. ``await batcher.submit(inputs, options)``
    returns ``predictor.predict(inputs, **options)``, computed together with whatever
    other requests arrived meanwhile (``max_wait_ms`` 0 and ``max_batch_size`` 1: each
    request alone)."""

    def __init__(self, name: str, predictor: Predictor, max_batch_size: int, max_wait_ms: float):
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: queue.Queue[Pending | None] = queue.Queue()
        self.calls = 0  # predictor calls made (for tests and the benchmark)
        # requests submitted (counted by the event loop) and answered (by this thread): the
        # difference is how many are in flight; each counter has one writer
        self.submitted = self.answered = 0
        self.thread = threading.Thread(target=self._serve, name=f"infer-{name}", daemon=True)
        self.thread.start()

    async def submit(self, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        pending = Pending(inputs, options, loop.create_future(), loop)
        self.submitted += 1
        self.queue.put(pending)
        return await pending.future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self.queue.put(None)
        self.thread.join()

    # ------------------------------------------------------------------ the thread

    def _serve(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            gathered, stop = self._gather(first)
            groups: dict[str, list[Pending]] = {}
            for pending in gathered:
                if pending.future.done():  # its client disconnected while it waited
                    self.answered += 1
                else:
                    groups.setdefault(pending.key, []).append(pending)
            for group in groups.values():
                self._run(group)
            if stop:
                return

    def _gather(self, first: Pending) -> tuple[list[Pending], bool]:
        """``first`` and the requests that arrive within ``max_wait`` of it, up to
        ``max_batch_size`` inputs; and whether a stop came meanwhile."""
        gathered, count = [first], len(first.inputs)
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch_size:
            if self.queue.empty() and self.submitted - self.answered <= len(gathered):
                break  # nobody else is waiting
            remaining = deadline - time.perf_counter()
            try:
                pending = (
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
            if pending is None:
                return gathered, True
            gathered.append(pending)
            count += len(pending.inputs)
        return gathered, False

    def _run(self, group: list[Pending]) -> None:
        inputs = [item for pending in group for item in pending.inputs]
        try:
            self.calls += 1
            results = self.predictor.predict(inputs, **group[0].options)
        except Exception as err:
            if len(group) == 1:
                self.answered += 1
                group[0].answer(error=err)
                return
            for pending in group:  # find the request that failed; the others still succeed
                self._run([pending])
            return
        start = 0
        for pending in group:
            self.answered += 1
            pending.answer(results[start : start + len(pending.inputs)])
            start += len(pending.inputs)
