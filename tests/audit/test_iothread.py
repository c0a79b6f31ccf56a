"""The trail's thread for blocking writes: each call runs off the loop, one at a time, in
the order made, and hands back its result or its exception."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.audit.iothread import IoThread


def test_calls_run_in_order_on_one_thread_off_the_loop() -> None:
    ran: list[tuple[int, str]] = []

    def call(n: int) -> int:
        ran.append((n, threading.current_thread().name))
        return n * 2

    async def main() -> list[int]:
        io = IoThread("audit-io-test")
        try:
            return [await io.run(call, n) for n in range(5)]
        finally:
            io.stop()

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert ran == [(n, "audit-io-test") for n in range(5)]


def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> str:
        io = IoThread()
        try:
            with pytest.raises(OSError, match="No space"):
                await io.run(fail)
            return await io.run(str.upper, "still here")
        finally:
            io.stop()

    assert asyncio.run(main()) == "STILL HERE"


def test_a_caller_cancelled_while_its_call_runs_leaves_the_thread_working() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)

    async def main() -> int:
        io = IoThread()
        try:
            task = asyncio.ensure_future(io.run(slow))
            await asyncio.to_thread(started.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            return await io.run(len, "abc")  # runs after the cancelled call has ended
        finally:
            io.stop()

    assert asyncio.run(main()) == 3
