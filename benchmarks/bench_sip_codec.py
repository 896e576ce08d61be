"""SIP codec benchmark: one proxy hop on a typical INVITE, ours against aiosipua.

Run: ``.venv/bin/python -m benchmarks.bench_sip_codec [--iterations N]``

A hop is the work each IMS module does on a message it relays: parse the datagram, pop the
top Via, decrement Max-Forwards, add a Record-Route and a new Via on top, serialise (the
brief's definition; it combines the edits of the forward and the return path).  Four
cases, timed one message at a time with ``time.perf_counter_ns``:

  (a) ours:     parse + modify (pop Via, Max-Forwards - 1, add Record-Route, add Via) + serialise
  (b) ours:     parse + serialise
  (c) aiosipua: parse + serialise
  (d) aiosipua: parse + the same modification + serialise

Cases are interleaved in 100 rounds so that load from other processes hits all of them
alike; the table gives the median and p99 over all messages, the throughput, and the
median of the quietest round (what the code costs when the machine is not busy).  A
reference row (a fixed pure-Python loop) shows how busy the machine was.  The target
verdict uses the overall median.  Not a pytest test.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

from actors.sip.headers import new_branch
from actors.sip.message import SipMessage

TARGET_US = 15.0
REFERENCE = "reference: sum(range(100))"

SDP = (
    "v=0\r\n"
    "o=ue0001 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:97 iLBC/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
    "m=video 51372 RTP/AVP 31 32\r\n"
    "a=rtpmap:31 H261/90000\r\n"
    "a=rtpmap:32 MPV/90000\r\n"
).encode()

HEAD = (
    "INVITE sip:ue0002@ims.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds01;rport\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds8;received=127.0.0.1\r\n"
    "Max-Forwards: 69\r\n"
    "Record-Route: <sip:127.0.0.1:5062;lr>\r\n"
    "Route: <sip:127.0.0.1:5064;lr>\r\n"
    'From: "UE 1" <sip:ue0001@ims.example>;tag=1928301774\r\n'
    "To: <sip:ue0002@ims.example>\r\n"
    "Call-ID: a84b4c76e66710@pc33.ims.example\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:ue0001@127.0.0.1:5070>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, UPDATE, OPTIONS\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: %d\r\n"
    "\r\n"
)
INVITE = (HEAD % len(SDP)).encode() + SDP

OUR_VIA = "SIP/2.0/UDP 127.0.0.1:5066;branch="
OUR_RR = "<sip:127.0.0.1:5066;lr>"


def ours_hop(data: bytes) -> bytes:
    m = SipMessage.parse(data)
    m.pop_first("Via")
    m.decrement_max_forwards()  # same as m.set("Max-Forwards", str(m.max_forwards - 1)), ~1 us cheaper
    m.add("Record-Route", OUR_RR, first=True)
    m.add("Via", OUR_VIA + new_branch(), first=True)
    return bytes(m)


def ours_roundtrip(data: bytes) -> bytes:
    return bytes(SipMessage.parse(data))


def _aiosipua():
    try:
        from aiosipua import SipMessage as A
    except ImportError:  # pragma: no cover
        return None
    return A


A = _aiosipua()


def aiosipua_roundtrip(data: bytes) -> bytes:
    return bytes(A.parse(data))


def aiosipua_hop(data: bytes) -> bytes:
    m = A.parse(data)
    vias = m.get_header_values("Via")  # the live list inside aiosipua's header dict
    vias.pop(0)
    m.set_header("Max-Forwards", str(int(m.get_header("Max-Forwards")) - 1))
    rr = m.get_header_values("Record-Route")
    if rr:
        rr.insert(0, OUR_RR)
    else:
        m.add_header("Record-Route", OUR_RR)
    vias.insert(0, OUR_VIA + new_branch())
    return bytes(m)


def _reference(_: bytes) -> int:
    """A fixed pure-Python workload: its time shows how fast the machine runs right now."""
    return sum(range(100))


def _time(fn, data: bytes, n: int, out: list[int]) -> None:
    pc = time.perf_counter_ns
    for _ in range(n):
        t0 = pc()
        fn(data)
        out.append(pc() - t0)


def run(iterations: int, rounds: int = 100) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    """Time every case ``iterations`` times, in ``rounds`` interleaved slices, so that
    load from other processes lands on all cases alike.  Returns all samples (ns) and
    each round's median (us) per case."""
    cases = {
        "(a) ours: parse+modify+serialize": ours_hop,
        "(b) ours: parse+serialize": ours_roundtrip,
    }
    if A is not None:
        cases["(c) aiosipua: parse+serialize"] = aiosipua_roundtrip
        cases["(d) aiosipua: parse+modify+serialize"] = aiosipua_hop
    cases[REFERENCE] = _reference
    samples: dict[str, list[int]] = {k: [] for k in cases}
    round_medians: dict[str, list[float]] = {k: [] for k in cases}
    per_round = max(1, iterations // rounds)
    for fn in cases.values():  # warm up
        _time(fn, INVITE, 500, [])
    for _ in range(rounds):
        for name, fn in cases.items():
            batch: list[int] = []
            _time(fn, INVITE, per_round, batch)
            samples[name].extend(batch)
            round_medians[name].append(statistics.median(batch) / 1000.0)
    return samples, round_medians


def _pct(sorted_ns: list[int], q: float) -> float:
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[i] / 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=40_000, help="messages per case")
    args = ap.parse_args(argv)

    # sanity: both hops produce messages that parse back with the expected edits
    for fn in (ours_hop,) + ((aiosipua_hop,) if A is not None else ()):
        out = SipMessage.parse(fn(INVITE))
        assert out.max_forwards == 68, fn
        assert out.get("Record-Route") == OUR_RR, fn
        assert out.branch and out.branch.startswith("z9hG4bK") and out.branch != "z9hG4bK776asdhds01"
        assert len(out.get_all("Via")) == 2 and out.body == SDP

    samples, round_medians = run(args.iterations)
    ref = sorted(samples.pop(REFERENCE))
    ref_rounds = round_medians.pop(REFERENCE)
    print(f"SIP codec benchmark: {len(INVITE)}-byte INVITE with SDP, {args.iterations} messages per case")
    print(f"python {platform.python_version()} on {platform.machine()}, gc enabled, 100 interleaved rounds")
    print()
    w = max(len(k) for k in samples)
    print(f"{'case':<{w}}  {'median us':>9}  {'p99 us':>8}  {'msgs/s':>9}  {'quietest round us':>17}")
    print(f"{'-' * w}  {'-' * 9}  {'-' * 8}  {'-' * 9}  {'-' * 17}")
    medians = {}
    for name, ns in samples.items():
        ns.sort()
        med = statistics.median(ns) / 1000.0
        medians[name] = med
        rate = len(ns) / (sum(ns) / 1e9)
        print(f"{name:<{w}}  {med:9.2f}  {_pct(ns, 0.99):8.2f}  {rate:9.0f}  {min(round_medians[name]):17.2f}")
    print()
    print(
        f"machine speed check: sum(range(100)) median {statistics.median(ref) / 1000:.2f} us "
        f"(quietest round {min(ref_rounds):.2f} us); higher means a busier machine, all rows slow down alike"
    )
    a = medians["(a) ours: parse+modify+serialize"]
    d = medians.get("(d) aiosipua: parse+modify+serialize")
    if d:
        print(f"hop speed-up vs aiosipua: {d / a:.1f}x")
    print(f"target: median <= {TARGET_US:g} us per hop -> {'PASS' if a <= TARGET_US else 'FAIL'} ({a:.2f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
