"""The whole media control loop over real sockets (paper 004 Fig. 3, 7, 9):

    AS (test, raw SIP) --INVITE Mrf-Script: <url>, UPDATE answer--> MRFC --control--> MRFP
    UE-A, UE-B (UDP sockets) ~RTP~> MRFP (media engine) ~RTP~> UE-B, UE-A
    MRFP metadata -> Media Update -> MRFC Media Control -> HTTP GET scripts from the AS's
    Media Policy (aiohttp) -> instruction -> Media Update -> MRFP

and the two modes on the same burst of calls, with the MRFC's and the AS's emulated capacity as
the only thing that makes anything wait: baseline holds each flow whenever its metadata is due
until the instruction is back, refactored never holds and prefetches.
"""

from __future__ import annotations

import asyncio
import statistics
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from actors import Runtime
from actors.sip.headers import new_branch
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.media_policy import MediaPolicy
from nf_modules.mediacore import ulaw_to_alaw
from nf_modules.mrfc import MRF_SCRIPT_HEADER, Mrfc, bridge_uri
from nf_modules.mrfp import MrfpSignalling
from nf_modules.sdp import mrf_sides
from nf_modules.user_agent import sdp_offer
from tests.integration.test_media_processor import WAIT, Ue, free_port_range, latencies_ms, tone, until

# Side A's media is transcoded to A-law inside the G.711 tolerance range; side B's decision is
# left to a finer-grained script the MRFC must fetch as well (Fig. 3a).
SCRIPTS = {
    "call": {"name": "call", "rules": [
        {"name": "a-to-alaw", "when": {"side": "A", "payload_size": [160, 240], "packet_rate": [30, 50]},
         "then": {"codec": "PCMA", "transcode": "ulaw2alaw", "bitrate_kbps": 64}},
        {"name": "finer", "fetch": "b-side"},
    ]},
    "b-side": {"name": "b-side", "rules": [
        {"name": "g711", "then": {"codec": "PCMU", "bitrate_kbps": 64}},
    ]},
}


class RawAs:
    """Plays the AS's SIP side towards the MRFC: INVITE (+ Mrf-Script), ACK, UPDATE answer."""

    def __init__(self, endpoint: UdpEndpoint, mrfc: tuple[str, int], script_url: str) -> None:
        self.endpoint, self.mrfc, self.script_url = endpoint, mrfc, script_url
        self.address = endpoint.local_address[:2]
        self.waiting: dict[tuple[str, int], asyncio.Future[SipMessage]] = {}
        endpoint.on_datagram = self._received

    def _received(self, data: bytes, _source: Any) -> None:
        message = SipMessage.parse(data)
        if message.status is None or message.status < 200:
            return
        future = self.waiting.pop((message.call_id or "", message.cseq[0]), None)
        if future is not None and not future.done():
            future.set_result(message)

    async def _ask(self, method: str, uri: str, call_id: str, cseq: int, headers: list[tuple[str, str]],
                   body: bytes = b"") -> SipMessage:
        host, port = self.address
        base = [("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()}"), ("Max-Forwards", "70"),
                ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), ("Contact", f"<sip:as@{host}:{port}>")]
        if body:
            headers = [*headers, ("Content-Type", "application/sdp")]
        future = self.waiting[(call_id, cseq)] = asyncio.get_running_loop().create_future()
        self.endpoint.send(bytes(SipMessage.request(method, uri, base + headers, body)), self.mrfc)
        return await asyncio.wait_for(future, WAIT)

    async def bridge(self, call: str, ue_a: Ue, ue_b: Ue) -> dict[str, tuple[str, int]]:
        """Set up the MRF dialog of ``call`` for the two UEs; MRFP's port per side."""
        uri = bridge_uri(call, self.mrfc)
        sip_call_id = f"mrf-{call}"
        from_ = ("From", f"<sip:as@127.0.0.1>;tag=as-{call}")
        ok = await self._ask("INVITE", uri, sip_call_id, 1, [from_, ("To", f"<{uri}>"),
                             (MRF_SCRIPT_HEADER, self.script_url)], sdp_offer(*ue_a.address))
        assert ok.status == 200, ok.status
        host, port = self.address
        ack = SipMessage.request("ACK", uri, [("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()}"), from_,
                                              ("To", ok.get("To")), ("Call-ID", sip_call_id), ("CSeq", "1 ACK")])
        self.endpoint.send(bytes(ack), self.mrfc)
        answered = await self._ask("UPDATE", uri, sip_call_id, 2, [from_, ("To", ok.get("To")),
                                   ("Mrf-Event", "answer;side=B")], sdp_offer(*ue_b.address))
        assert answered.status == 200, answered.status
        return mrf_sides(ok.body)


@dataclass
class Loop:
    policy: Any
    mrfp: Any
    mrfc: Any
    as_sip: RawAs


@asynccontextmanager
async def media_loop(mode: str, *, mrfc_capacity: float | None = None, as_capacity: float | None = None,
                     refresh: float = 2.0) -> AsyncIterator[Loop]:
    async with Runtime.attach():
        policy = MediaPolicy.start("as-media", scripts=SCRIPTS, script_capacity=as_capacity).proxy()
        url = await policy.get_script_url()
        mrfp = MrfpSignalling.start("mrfp", port_range=free_port_range(200), mode=mode, metadata_interval=0.1,
                                    update_options={"refresh": refresh}).proxy()
        mrfc = Mrfc.start("mrfc", mrfp=await mrfp.get_address(), mode=mode, media_capacity=mrfc_capacity).proxy()
        endpoint = await UdpEndpoint.open(("127.0.0.1", 0), None)
        try:
            yield Loop(policy, mrfp, mrfc, RawAs(endpoint, await mrfc.get_address(), url))
        finally:
            endpoint.close()


async def test_scripts_fetched_from_the_as_transcode_side_a_through_the_whole_loop() -> None:
    payload = tone()
    async with media_loop("refactored") as loop:
        ue_a, ue_b = await Ue.open(), await Ue.open()
        try:
            sides = await loop.as_sip.bridge("c1", ue_a, ue_b)
            seq = 0

            async def alaw_reached_b() -> bool:
                nonlocal seq
                seq += 1
                ue_a.send(sides["A"], 0xA, seq, payload)
                ue_b.send(sides["B"], 0xB, seq, payload)
                await asyncio.sleep(0.02)
                return any(h.payload_type == 8 for _, h, _, _ in ue_b.packets())

            await until(alaw_reached_b, "A-law at UE-B")
            for _, header, body, source in ue_b.packets():
                assert source == sides["B"]
                assert body == (ulaw_to_alaw(payload) if header.payload_type == 8 else payload)
            assert all(h.payload_type == 0 and body == payload for _, h, body, _ in ue_a.packets())
            flows = await loop.mrfp.get_flows()
            assert flows["c1/A"]["instruction"] == {"action": "forward", "codec": "PCMA", "bitrate_kbps": 64.0,
                                                    "ptime_ms": None, "transcode": "ulaw2alaw", "payload_type": None}
            await until(lambda: _b_side_decided(loop.mrfp), "side B's instruction from the finer script")
            mrfc = await loop.mrfc.get_stats()
            assert mrfc["sets_evaluated"] >= 2 and mrfc["media_calls"] == 1
            # the AS served the root script and, for side B, the finer-grained one: each once per
            # call in refactored mode (cached at the MRFC)
            fetched = await loop.policy.get_script_stats()
            assert fetched["fetch_call"] == 1 and fetched["fetch_b-side"] == 1
            assert mrfc["script_cache_hits"] >= 1
            update = await loop.mrfp.get_media_update_stats()
            assert update["update_metadata"] >= 2 and update["update_pushes"] == 2
        finally:
            ue_a.close()
            ue_b.close()


async def _b_side_decided(mrfp: Any) -> bool:
    return (await mrfp.get_flows())["c1/B"]["instruction"]["codec"] == "PCMU"


CALLS = 10
BURST_TICKS = 75  # 1.5 s of 20 ms packets, both ways, per call


async def run_burst(mode: str) -> dict[str, Any]:
    """``CALLS`` calls at once through a loop whose MRFC and AS serve 100 requests/s each."""
    payload = tone()
    async with media_loop(mode, mrfc_capacity=100, as_capacity=100) as loop:
        ues = [(await Ue.open(), await Ue.open()) for _ in range(CALLS)]
        try:
            sides = [await loop.as_sip.bridge(f"c{i}", a, b) for i, (a, b) in enumerate(ues)]
            for seq in range(1, BURST_TICKS + 1):
                for i, (a, b) in enumerate(ues):
                    a.send(sides[i]["A"], 2 * i + 1, seq, payload)
                    b.send(sides[i]["B"], 2 * i + 2, seq, payload)
                await asyncio.sleep(0.02)
            expected = 2 * CALLS * BURST_TICKS
            await until(lambda: _received(ues, expected), f"{mode}: all packets delivered", timeout=15)
            latencies = sorted(x for a, b in ues for x in latencies_ms(b, [a]) + latencies_ms(a, [b]))
            flows = await loop.mrfp.get_flows()
            return {
                "latencies": latencies,
                "p50": statistics.median(latencies),
                "p90": latencies[int(0.9 * len(latencies))],
                "max": latencies[-1],
                "held_packets": sum(f["stats"]["held_packets"] for f in flows.values()),
                "as_fetches": (await loop.policy.get_script_stats()).get("fetches", 0),
                "mrfc": await loop.mrfc.get_stats(),
            }
        finally:
            for a, b in ues:
                a.close()
                b.close()


async def _received(ues: list[tuple[Ue, Ue]], expected: int) -> bool:
    return sum(len(a.got) + len(b.got) for a, b in ues) >= expected


async def test_baseline_holds_packets_behind_the_loaded_control_loop_refactored_does_not() -> None:
    baseline = await run_burst("baseline")
    refactored = await run_burst("refactored")
    summary = {m: {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items() if k not in ("latencies", "mrfc")}
               for m, r in (("baseline", baseline), ("refactored", refactored))}
    print(summary)
    # baseline: packets wait at every metadata interval for MRFC + AS, queued at 100/s each
    assert baseline["held_packets"] > 0 and refactored["held_packets"] == 0, summary
    assert baseline["p90"] > 3 * refactored["p90"] and baseline["max"] > 50, summary
    assert refactored["p50"] < 10, summary
    # the serial loop fetches the scripts on every evaluation; prefetch with the cache does not
    assert baseline["as_fetches"] > 5 * refactored["as_fetches"], summary


async def test_script_server_over_http_queues_refuses_and_counts() -> None:
    from nf_modules.media_control import ScriptFetcher, ScriptFetchError
    from nf_modules.media_scripts import ScriptLibrary, ScriptServer

    server = ScriptServer(ScriptLibrary(SCRIPTS), capacity=20, queue_limit=2)
    url = await server.start()
    fetcher = ScriptFetcher(timeout=5.0)
    try:
        assert url.endswith("/scripts/call")
        # three at once: two fit the queue (served 50 ms apart), the third gets 503
        results = await asyncio.gather(*(fetcher.fetch(url) for _ in range(3)), return_exceptions=True)
        served = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, ScriptFetchError)]
        assert len(served) == 2 and served[0].name == "call"
        assert len(refused) == 1 and "HTTP 503" in str(refused[0])
        try:
            await fetcher.fetch(url.replace("/call", "/nowhere"))
        except ScriptFetchError as error:
            assert "HTTP 404" in str(error)
        else:
            raise AssertionError("a missing script must fail")
        assert server.stats["fetches"] == 2 and server.stats["rejected_503"] == 1 and server.stats["not_found"] == 1
        assert fetcher.stats["http_requests"] == 4 and fetcher.stats["http_503"] == 1
    finally:
        await fetcher.close()
        await server.close()
