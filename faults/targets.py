"""How faults reach a running module: its actor and its sockets, through the runtime's seams only.

An instance's endpoints are found in the transport's registry (:func:`actors.transport.endpoint_at`)
by the bound address the deployment recorded, plus any endpoint named ``"<instance>.<part>"``
(e.g. the MRFC's ``mrfc.control`` port towards the MRFP). A name with an ``@`` is another
module's stand-in for the instance (``"<instance>.local@<neighbour>"``, started by failover), not
part of it. Endpoint methods must run on the
endpoint's own loop: :func:`on_loop` gets there from whichever loop the injector runs on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.clock import Clock
from actors.transport import Address, UdpEndpoint, endpoint_at, open_endpoints
from faults.timeline import Timeline
from nf_modules.deployment import ImsDeployment

__all__ = ["FaultContext", "instance_addresses", "instance_endpoints", "on_loop"]

T = TypeVar("T")


@dataclass
class FaultContext:
    """What a fault acts on and records to; ``loop`` is the injector's loop (where apply runs)."""

    deployment: ImsDeployment
    clock: Clock
    timeline: Timeline
    loop: asyncio.AbstractEventLoop


def instance_endpoints(deployment: ImsDeployment, name: str) -> list[UdpEndpoint]:
    """The open endpoints of instance ``name`` in this process (its bound address first)."""
    found: list[UdpEndpoint] = []
    main = endpoint_at(deployment.addresses[name])
    if main is not None:
        found.append(main)
    prefix = f"{name}."
    found.extend(e for e in open_endpoints() if e.name.startswith(prefix) and "@" not in e.name and e is not main)
    return found


def instance_addresses(deployment: ImsDeployment, name: str) -> set[Address]:
    """Every address ``name`` sends from or listens on that the registry knows, plus its bound one."""
    addresses = {tuple(deployment.addresses[name][:2])}
    addresses.update(tuple(e.local_address[:2]) for e in instance_endpoints(deployment, name))
    return addresses


async def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on ``loop`` (at once if that is the running loop) and return its result."""
    if asyncio.get_running_loop() is loop:
        return fn(*args)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001  (handed to the awaiting loop)
            done.set_exception(error)

    loop.call_soon_threadsafe(run)
    return await asyncio.wrap_future(done)
