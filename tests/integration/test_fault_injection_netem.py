"""Link faults as kernel netem qdiscs between two network namespaces, where the machine allows.

Skipped, with the probe's reason, where namespaces, veth pairs or the ``netem`` qdisc are not
available (e.g. a container without CAP_NET_ADMIN or a kernel without ``sch_netem``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from faults.netem import NetemLink, netem_args, netem_support

SUPPORTED, WHY = netem_support()

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(20)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

PING = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
rtts = []
for i in range(int(sys.argv[3])):
    t = time.monotonic()
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    s.recvfrom(2048)
    rtts.append(time.monotonic() - t)
print(min(rtts))
"""


def test_the_probe_says_why_when_netem_is_unavailable() -> None:
    assert isinstance(SUPPORTED, bool)
    assert SUPPORTED or WHY  # never "no" without a reason


@pytest.mark.skipif(not SUPPORTED, reason=f"netem not available here: {WHY}")
def test_netem_delay_between_namespaces_is_measured() -> None:
    with NetemLink(prefix="fit") as link:
        echo = subprocess.Popen(
            [*link.exec_prefix("b"), sys.executable, "-c", ECHO, link.addr_b, "6"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            port = echo.stdout.readline().strip()  # type: ignore[union-attr]

            def min_rtt() -> float:
                out = subprocess.run(
                    [*link.exec_prefix("a"), sys.executable, "-c", PING, link.addr_b, port, "3"],
                    capture_output=True, text=True, timeout=30, check=True,
                )
                return float(out.stdout)

            assert min_rtt() < 0.02
            link.apply(netem_args(delay=0.05), "forward")
            assert "netem" in link.show()[link.ns_a]
            assert 0.05 <= min_rtt() < 0.5
        finally:
            echo.kill()
            echo.wait()
