"""The runtime: asyncio actors behind pykka's API, supervision, clocks, UDP, logs, topologies.

The sans-IO SIP stack lives in ``actors.sip``; ``actors.sip_actor.SipActor``
puts it on a UDP port inside an actor.
"""

from actors.actor import AsyncioActor, Terminated, concurrent, unwatch, watch
from actors.clock import Clock, LoopClock, VirtualClock
from actors.future import AsyncioFuture, as_asyncio_future
from actors.impairment import LinkImpairment
from actors.logs import configure_logging, get_logger
from actors.restart import Backoff, RestartIntensity
from actors.runtime import Runtime
from actors.supervisor import ChildSpec, Supervisor, SupervisorGaveUp
from actors.topology import Topology, TopologyError, load_topology
from actors.transport import EndpointStats, TransportSeam, UdpEndpoint

__all__ = [
    "AsyncioActor",
    "AsyncioFuture",
    "Backoff",
    "ChildSpec",
    "Clock",
    "EndpointStats",
    "LinkImpairment",
    "LoopClock",
    "RestartIntensity",
    "Runtime",
    "Supervisor",
    "SupervisorGaveUp",
    "Terminated",
    "Topology",
    "TopologyError",
    "TransportSeam",
    "UdpEndpoint",
    "VirtualClock",
    "as_asyncio_future",
    "concurrent",
    "configure_logging",
    "get_logger",
    "load_topology",
    "unwatch",
    "watch",
]
