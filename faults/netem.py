"""Link faults as real kernel qdiscs: two network namespaces joined by a veth pair, with netem.

The in-process seam (:mod:`faults.kinds`) is the default way faults reach a link. Where the
machine allows it (root, ``ip`` and ``tc`` from iproute2, network namespaces, and the kernel's
``sch_netem``), :class:`NetemLink` puts the same link faults in the kernel instead: a placement
group of a topology runs in each namespace (``ip netns exec NS python -m experiments.serve ...``,
see :meth:`NetemLink.exec_prefix`), and the delay, jitter, loss, duplication, reordering and
corruption of a plan's link fault become a ``netem`` qdisc on the sending end's veth.

:func:`netem_support` probes all of that once and says why not when it cannot; tests skip with
that reason. Every command runs through :func:`subprocess.run` with a timeout and raises
:class:`NetemError` with ``tc``'s own message on failure.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

from faults.kinds import Fault

__all__ = ["NetemError", "NetemLink", "netem_args", "netem_args_for", "netem_support"]

_TIMEOUT = 10.0


class NetemError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message carries the command and its stderr."""


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetemError(f"{' '.join(argv)}: {error}") from None
    if done.returncode != 0:
        raise NetemError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip() or done.returncode}")
    return done.stdout


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}ms"


def _pct(p: float) -> str:
    return f"{p * 100:.4f}%"


def netem_args(
    *,
    delay: float = 0.0,
    jitter: float = 0.0,
    distribution: str = "uniform",
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    corrupt: float = 0.0,
) -> list[str]:
    """The ``tc qdisc ... netem`` arguments for these settings (seconds, probabilities 0..1).

    netem reorders only delayed packets (the ones not held back are sent at once), so reordering
    without a delay gets netem's customary 10 ms.
    """
    if reorder and not delay:
        delay = 0.010
    args: list[str] = []
    if delay or jitter:
        args += ["delay", _ms(delay)]
        if jitter:
            args += [_ms(jitter)]
            if distribution == "normal":
                args += ["distribution", "normal"]
    if loss:
        args += ["loss", _pct(loss)]
    if duplicate:
        args += ["duplicate", _pct(duplicate)]
    if reorder:
        args += ["reorder", _pct(reorder)]
    if corrupt:
        args += ["corrupt", _pct(corrupt)]
    return args


def netem_args_for(fault: Fault) -> list[str]:
    """The netem arguments of a plan's link fault (kinds delay, loss, duplicate, reorder, corrupt, partition)."""
    s = fault.settings
    if fault.kind == "partition":
        return netem_args(loss=1.0)
    if fault.kind == "delay":
        return netem_args(delay=s["delay"], jitter=s["jitter"], distribution=s["distribution"])
    if fault.kind == "loss":
        return netem_args(loss=s["probability"])
    if fault.kind == "duplicate":
        return netem_args(duplicate=s["probability"])
    if fault.kind == "reorder":
        return netem_args(reorder=s["probability"])
    if fault.kind == "corrupt":
        return netem_args(corrupt=s["probability"])
    raise ValueError(f"a {fault.kind} fault is not a link fault netem can carry")


@functools.cache
def netem_support() -> tuple[bool, str]:
    """``(True, "")`` if namespaces, veth and netem all work here, else ``(False, why)``. Probed once."""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (apt-get install iproute2)"
    probe = NetemLink(prefix="fiprobe")
    try:
        probe.create()
    except NetemError as error:
        return False, f"cannot create network namespaces and a veth pair: {error}"
    try:
        probe.apply(netem_args(delay=0.001))
        return True, ""
    except NetemError as error:
        return False, f"the kernel refuses netem qdiscs (no sch_netem module?): {error}"
    finally:
        probe.destroy()


@dataclass
class NetemLink:
    """Namespaces ``a`` and ``b`` joined by a veth pair, addresses ``addr_a``/``addr_b`` (/30)."""

    prefix: str = "fi"
    addr_a: str = "10.203.0.1"
    addr_b: str = "10.203.0.2"

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns_a, self.ns_b = f"{self.prefix}{tag}a", f"{self.prefix}{tag}b"
        self.dev_a, self.dev_b = f"v{tag}a", f"v{tag}b"
        self.created = False

    def create(self) -> NetemLink:
        try:
            _run("ip", "netns", "add", self.ns_a)
            _run("ip", "netns", "add", self.ns_b)
            self.created = True
            _run("ip", "link", "add", self.dev_a, "netns", self.ns_a, "type", "veth", "peer", "name", self.dev_b, "netns", self.ns_b)
            for ns, dev, addr in ((self.ns_a, self.dev_a, self.addr_a), (self.ns_b, self.dev_b, self.addr_b)):
                _run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except NetemError:
            self.destroy()
            raise
        return self

    def exec_prefix(self, side: str) -> list[str]:
        """Prefix a command with this to run it in namespace ``side`` ("a" or "b")."""
        return ["ip", "netns", "exec", self.ns_a if side == "a" else self.ns_b]

    def apply(self, args: list[str], direction: str = "forward") -> None:
        """Put netem ``args`` on the sending end(s): forward = a -> b, backward, or both."""
        for ns, dev in self._ends(direction):
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem", *args)

    def clear(self, direction: str = "both") -> None:
        for ns, dev in self._ends(direction):
            try:
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root")
            except NetemError:
                pass  # no qdisc there

    def show(self) -> dict[str, Any]:
        return {ns: _run("ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev).strip()
                for ns, dev in self._ends("both")}

    def destroy(self) -> None:
        """Delete both namespaces (the veth pair goes with them). Idempotent."""
        for ns in (self.ns_a, self.ns_b):
            try:
                _run("ip", "netns", "del", ns)
            except NetemError:
                pass
        self.created = False

    def _ends(self, direction: str) -> list[tuple[str, str]]:
        ends = {"forward": [(self.ns_a, self.dev_a)], "backward": [(self.ns_b, self.dev_b)],
                "both": [(self.ns_a, self.dev_a), (self.ns_b, self.dev_b)]}
        if direction not in ends:
            raise ValueError(f"direction must be forward, backward or both, got {direction!r}")
        return ends[direction]

    def __enter__(self) -> NetemLink:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
