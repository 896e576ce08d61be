"""Actor messaging: AsyncioActor side by side with pykka.ThreadingActor, in one run.

    python -m benchmarks.bench_actors [--messages N] [--asks N] [--repeat R]

Measures, for each actor kind, ``tell`` throughput (a sender tells N messages
to a counting actor; the clock stops when the actor has handled the last one)
and ``ask`` round-trip time. For AsyncioActor both senders that matter are
measured: a foreign thread (like a pykka user's main thread) and another actor
on the same loop (how the emulator's modules talk). Target of the foundation
issue: AsyncioActor tell throughput >= 5x pykka's threading actors.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

import pykka

from actors import AsyncioActor, Runtime


class _Counter:
    """Counts messages; sets ``done`` when the expected count is reached."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.count = 0
        self.done = threading.Event()

    def on_receive(self, message: object) -> object:
        if message == "ping":
            return "pong"
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return None


class ThreadCounter(_Counter, pykka.ThreadingActor):
    pass


class LoopCounter(_Counter, AsyncioActor):
    pass


class LoopSender(AsyncioActor):
    """Tells ``n`` messages to ``target`` from the same event loop."""

    def burst(self, target: pykka.ActorRef[object], n: int) -> None:
        tell = target.tell
        for i in range(n):
            tell(i)

    async def ask_loop(self, target: pykka.ActorRef[object], n: int) -> list[float]:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await target.ask("ping", block=False)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        return samples


def tell_from_thread(actor_cls: type, n: int) -> float:
    ref = actor_cls.start(n)
    done = ref.proxy().done.get()
    t0 = time.perf_counter()
    tell = ref.tell
    for i in range(n):
        tell(i)
    done.wait()
    elapsed = time.perf_counter() - t0
    ref.stop()
    return n / elapsed


def tell_from_actor(n: int) -> float:
    ref = LoopCounter.start(n)
    sender = LoopSender.start()
    done = ref.proxy().done.get()
    t0 = time.perf_counter()
    sender.proxy().burst(ref, n)
    done.wait()
    elapsed = time.perf_counter() - t0
    sender.stop()
    ref.stop()
    return n / elapsed


def ask_from_thread(actor_cls: type, n: int) -> list[float]:
    ref = actor_cls.start(0)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        ref.ask("ping")
        samples.append((time.perf_counter_ns() - t0) / 1000)
    ref.stop()
    return samples


def ask_from_actor(n: int) -> list[float]:
    ref = LoopCounter.start(0)
    sender = LoopSender.start()
    samples = sender.proxy().ask_loop(ref, n).get()
    sender.stop()
    ref.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="tells per run")
    parser.add_argument("--asks", type=int, default=5_000, help="asks per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best is kept")
    args = parser.parse_args()
    Runtime.default()  # start the loop thread outside the timed region

    def best(fn, *a):  # noqa: ANN001, ANN202
        return max(fn(*a) for _ in range(args.repeat))

    pykka_tell = best(tell_from_thread, ThreadCounter, args.messages)
    loop_tell_thread = best(tell_from_thread, LoopCounter, args.messages)
    loop_tell_actor = best(tell_from_actor, args.messages)
    pykka_ask = ask_from_thread(ThreadCounter, args.asks)
    loop_ask_thread = ask_from_thread(LoopCounter, args.asks)
    loop_ask_actor = ask_from_actor(args.asks)

    def p(samples: list[float], q: float) -> float:
        return statistics.quantiles(samples, n=100)[int(q) - 1]

    print(f"actor messaging, {args.messages} tells x best of {args.repeat}, {args.asks} asks")
    print(f"{'case':52} {'tell msg/s':>12} {'vs pykka':>9}")
    rows = [
        ("pykka.ThreadingActor, sender = main thread", pykka_tell),
        ("AsyncioActor, sender = main thread", loop_tell_thread),
        ("AsyncioActor, sender = actor on the same loop", loop_tell_actor),
    ]
    for name, rate in rows:
        print(f"{name:52} {rate:12,.0f} {rate / pykka_tell:8.1f}x")
    print(f"{'case':52} {'ask p50 us':>12} {'p99 us':>9}")
    for name, samples in [
        ("pykka.ThreadingActor, asker = main thread (blocking)", pykka_ask),
        ("AsyncioActor, asker = main thread (blocking)", loop_ask_thread),
        ("AsyncioActor, asker = actor on the same loop (await)", loop_ask_actor),
    ]:
        print(f"{name:52} {statistics.median(samples):12.1f} {p(samples, 99):9.1f}")
    ratio = max(loop_tell_thread, loop_tell_actor) / pykka_tell
    verdict = "PASS" if ratio >= 5 else "FAIL"
    print(f"target: AsyncioActor tell throughput >= 5x pykka threading -> {ratio:.1f}x {verdict}")
    Runtime.default().shutdown()


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
