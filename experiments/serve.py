"""``python run.py serve``: the IMS of a topology, running for external user agents.

Deploys every module of the topology (default: ``topologies/default.toml``,
one process on 127.0.0.1, P-CSCF at 5060), registers the UE pool's
subscribers through the P-CSCF so each one answers calls, prints the
addresses and SIPp command lines to use, and keeps running until Ctrl-C or
``duration`` seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from actors import Runtime, Topology, load_topology
from actors.gc_tuning import collect_old, tune_for_latency
from nf_modules.deployment import ImsDeployment, deploy

__all__ = ["DEFAULT_TOPOLOGY", "serve", "sipp_commands"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = ROOT / "topologies" / "default.toml"
RUN_PY = ROOT / "run.py"


def sipp_commands(ims: ImsDeployment) -> list[str]:
    host, port = ims.addresses["pcscf"]
    return [
        f"sipp -sn uac -s ue0002 -m 10 -r 2 {host}:{port}",
        f"sipp -sn uac -s ue0002 -r 50 -d 5000 -m 1000 {host}:{port}",
    ]


async def start_ims(
    topology: Topology, *, process: str | None = None, register: bool = True
) -> tuple[ImsDeployment, dict[str, Any]]:
    """Deploy ``topology`` (its ``process`` group, or all) and register the UE pools' subscribers."""
    ims = await deploy(topology, process=process)
    registrations: dict[str, Any] = {}
    for nf in topology.by_kind("ue_pool"):
        if register and nf.name in ims.refs:
            registrations[nf.name] = await ims.proxy(nf.name).register_all()
    return ims, registrations


def serve(
    topology: Topology | str | Path = DEFAULT_TOPOLOGY,
    *,
    duration: float | None = None,
    process: str | None = None,
    ready: threading.Event | None = None,
    print_fn: Any = print,
) -> dict[str, Any]:
    """Run the IMS until Ctrl-C (or ``duration`` seconds); return this process's modules' stats
    (and, under ``gc_old_generations``, what a full collection found at the end: see
    ``actors.gc_tuning``).

    With several placement groups in the topology and no ``process`` given, the
    groups without the P-CSCF run in child processes (``run.py serve --process
    G``), started first; this process runs the P-CSCF's group and registers the
    UEs. With ``process`` given, only that group runs here.
    """
    if not isinstance(topology, Topology):
        topology = load_topology(topology)
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    children: list[subprocess.Popen[str]] = []
    try:
        groups = topology.processes()
        if process is None and len(groups) > 1:
            own = topology["pcscf"].process if "pcscf" in topology.nfs else next(iter(groups))
            children = [_spawn_group(topology, group, duration) for group in groups if group != own]
            process = own
        with Runtime(name=f"serve-{process or 'main'}") as runtime:
            ims, registrations = runtime.run(start_ims(topology, process=process), timeout=120)
            tune_for_latency()
            _announce(topology, ims, registrations, process, print_fn)
            print_fn("Ctrl-C stops." if duration is None else f"Stopping after {duration:g} s.", flush=True)
            if ready is not None:
                ready.set()
            stop.wait(duration)
            stats = runtime.run(ims.stats(), timeout=30)
            # Did cycles outlive their young collection (which tune_for_latency leaves
            # uncollected)? Counted here, once the load has stopped.
            stats["gc_old_generations"] = collect_old()
            runtime.run(ims.stop(), timeout=60)
        return stats
    finally:
        for child in children:
            _stop_child(child)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(topology: Topology, ims: ImsDeployment, registrations: dict[str, Any], process: str | None, print_fn: Any) -> None:
    where = f" (placement group {process!r})" if process else ""
    if "pcscf" in ims.addresses and "pcscf" in ims.refs:
        host, port = ims.addresses["pcscf"]
        print_fn(f"IMS up{where}: P-CSCF at {host}:{port}, domain {topology.domain}, {len(ims.refs)} modules here")
    else:
        print_fn(f"IMS group up{where}: {len(ims.refs)} modules")
    for name in ims.order:
        host, port = ims.addresses[name]
        print_fn(f"  {name:<30} {topology[name].kind:<28} {host}:{port}")
    for pool, summary in registrations.items():
        print_fn(f"  {pool}: {summary}")
    if "pcscf" in ims.refs:
        print_fn("Try:")
        for line in sipp_commands(ims):
            print_fn(f"  {line}")
    print_fn(READY_LINE, flush=True)


READY_LINE = "READY"


def _spawn_group(topology: Topology, group: str, duration: float | None) -> subprocess.Popen[str]:
    """Start ``run.py serve --process group`` and wait until it says READY."""
    if topology.source in ("", "<string>") or not Path(topology.source).is_file():
        raise ValueError("a multi-process topology must be loaded from a file (the children read it)")
    command = [sys.executable, str(RUN_PY), "serve", "--topology", str(topology.source), "--process", group]
    if duration is not None:
        command += ["--duration", str(duration + 30)]  # the parent stops it first; this is a backstop
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
    deadline = time.monotonic() + 60
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == READY_LINE:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError(f"placement group {group!r} exited before it was ready (status {child.wait()})")
    threading.Thread(target=lambda: [None for _ in child.stdout], daemon=True).start()  # type: ignore[union-attr]
    return child


def _stop_child(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
