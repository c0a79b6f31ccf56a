"""The audit trail's own thread for the writes that may block (an fsync, a stdout pipe).

``asyncio.to_thread`` hands each call to the default pool through a concurrent future
chained to an asyncio one; after a call that blocked (an fsync), waking the loop back costs
about 20 to 45 µs of CPU more than this thread's hand-off: one ``SimpleQueue`` in, one
``call_soon_threadsafe`` out (measured with uvloop, one core, 900-byte appends). With
``fsync = "always"`` and one request at a time that is paid on every request.

Calls run one at a time, in the order they were made: the trail awaits each before the
next, and ``LogFile`` relies on never being called from two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, asyncio.Future[Any]]


class IoThread:
    def __init__(self, name: str = "audit-io") -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread; its result, or its exception raised here."""
        if self._thread is None:
            # daemon: a trail never closed must not keep the interpreter from exiting
            thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            thread.start()  # recorded once it runs: a thread that failed to start is retried
            self._thread = thread
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, args, loop, done))
        return await done

    def stop(self) -> None:
        """The thread ends once the calls already made have run."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args, loop, done = call
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, as to_thread does
                _settle_soon(loop, done, None, exc)
            else:
                _settle_soon(loop, done, result, None)


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    done: asyncio.Future[Any],
    result: object,
    exc: BaseException | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        loop.call_soon_threadsafe(_settle, done, result, exc)


def _settle(done: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if done.done():  # the caller was cancelled; the call ran anyway, as with to_thread
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)
