"""The HSS actor over real UDP on loopback, queried through the control helper from other actors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors import AsyncioActor, Runtime
from actors.control import ControlActor, ControlError, ControlPeer, ControlTimeout
from actors.control_protocol import decode, encode_request
from actors.sip.digest import DigestChallenger, Verdict, authorization_for, ha1
from actors.sip.message import SipMessage
from actors.sip_actor import SipActor
from actors.transport import UdpEndpoint
from nf_modules.hss import Hss

WAIT = 10.0
Address = tuple[str, int]


class Querier(AsyncioActor):
    """An ordinary actor that owns a client-only control peer."""

    def __init__(self, timeout: float = 2.0) -> None:
        super().__init__()
        self.timeout = timeout
        self.control: ControlPeer | None = None

    async def on_start(self) -> None:
        self.control = await ControlPeer.open(self, name="querier", timeout=self.timeout)

    def on_stop(self) -> None:
        self.control.close()

    async def query(self, dest: Address, op: str, args: dict[str, Any] | None = None) -> Any:
        """Asked through a proxy: awaits the reply inside an inbox handler (no deadlock)."""
        try:
            return {"ok": await self.control.call(dest, op, args)}
        except ControlError as error:
            return {"error": error.code, "message": error.message}
        except ControlTimeout as error:
            return {"timeout": str(error)}

    def get_stats(self) -> dict[str, int]:
        return self.control.get_stats()


class Registrar(SipActor):
    """A SipActor that checks REGISTER digests against the HSS (the S-CSCF's use of the helper)."""

    def __init__(self, hss: Address) -> None:
        super().__init__("registrar", trying_delay=None)
        self.hss = hss
        self.challenger = DigestChallenger("ims.example", secret=b"k" * 32)

    async def on_start(self) -> None:
        await super().on_start()
        self.control = await ControlPeer.open(self, name="registrar-control", clock=self.clock)

    def on_stop(self) -> None:
        super().on_stop()
        self.control.close()

    async def on_request(self, request: SipMessage, transaction: Any, source: Address) -> None:
        user = request.get("To").split("sip:", 1)[1].split("@", 1)[0]
        try:
            vector = await self.control.request(self.hss, "auth_vector", impu=user)
        except ControlError as error:
            assert error.code == "not_found"
            self.send_response(transaction, request.make_response(404))
            return
        authorization = request.get("Authorization")
        if authorization is None:
            response = request.make_response(401)
            response.set("WWW-Authenticate", self.challenger.challenge(self.now))
            self.send_response(transaction, response)
            return
        verdict = self.challenger.verify(authorization, request.method, vector["ha1"], self.now)
        if verdict is not Verdict.OK:
            self.send_response(transaction, request.make_response(403))
            return
        await self.control.request(
            self.hss, "register", impu=vector["impu"], contact=f"sip:{user}@{source[0]}:{source[1]}", expires=60,
            pcscf=f"{self.address[0]}:{self.address[1]}",
        )
        self.send_response(transaction, request.make_response(200))


class Faulty(ControlActor):
    def handle_boom(self) -> None:
        raise RuntimeError("a bug")

    async def handle_slow_echo(self, value: Any, delay: float = 0.0) -> Any:
        await asyncio.sleep(delay)
        return value

    def handle_unserialisable(self) -> Any:
        return {1, 2}


class RawPeer:
    """A bare UDP socket for hand-made datagrams."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.endpoint: UdpEndpoint | None = None

    async def __aenter__(self) -> RawPeer:
        self.endpoint = await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: self.inbox.put_nowait(d))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.endpoint.close()

    def send(self, data: bytes, to: Address) -> None:
        self.endpoint.send(data, to)

    async def receive(self) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), WAIT)


async def test_hss_serves_subscribers_and_registrations_over_udp() -> None:
    async with Runtime.attach():
        hss = Hss.start().proxy()
        address = await hss.get_address()
        querier = Querier.start().proxy()

        vector = await querier.query(address, "auth_vector", {"impu": "sip:ue0001@ims.example"})
        assert vector["ok"]["ha1"] == ha1("ue0001", "ims.example", "secret")
        assert vector["ok"]["realm"] == "ims.example" and vector["ok"]["algorithm"] == "MD5"
        sha = await querier.query(address, "auth_vector", {"impu": "ue1000", "algorithm": "SHA-256"})
        assert sha["ok"]["ha1"] == ha1("ue1000", "ims.example", "secret", "SHA-256")

        unknown = await querier.query(address, "auth_vector", {"impu": "ue1001"})
        assert unknown["error"] == "not_found" and "ue1001" in unknown["message"]

        reg = await querier.query(
            address,
            "register",
            {"impu": "ue0002", "contact": "sip:ue0002@127.0.0.1:40002", "expires": 120,
             "path": ["<sip:pcscf@127.0.0.1:5060;lr>"], "pcscf": "127.0.0.1:5060"},
        )
        assert reg["ok"]["impu"] == "sip:ue0002@ims.example" and reg["ok"]["expires"] == 120
        lookup = await querier.query(address, "lookup", {"impu": "sip:ue0002@ims.example"})
        [binding] = lookup["ok"]["bindings"]
        assert binding["contact"] == "sip:ue0002@127.0.0.1:40002" and binding["path"] == ["<sip:pcscf@127.0.0.1:5060;lr>"]
        assert 119 <= binding["expires"] <= 120
        assert (await querier.query(address, "serving_pcscf", {"impu": "ue0002"}))["ok"]["pcscf"] == "127.0.0.1:5060"
        assert (await querier.query(address, "serving_pcscf", {"impu": "ue0003"}))["ok"]["pcscf"] is None
        listed = await querier.query(address, "list_registered", {})
        assert listed["ok"] == {"impus": ["sip:ue0002@ims.example"], "total": 1, "next": None}
        dereg = await querier.query(address, "deregister", {"impu": "ue0002"})
        assert dereg["ok"]["removed"] == 1 and dereg["ok"]["bindings"] == []

        assert (await querier.query(address, "lookup", {"imsi": "x"}))["error"] == "bad_args"
        assert (await querier.query(address, "register", {"impu": "ue0002", "contact": "c", "expires": -5}))["error"] == "bad_args"
        assert (await querier.query(address, "list_registered", {"limit": -1}))["error"] == "bad_args"
        assert (await querier.query(address, "drop_tables", {}))["error"] == "unknown_op"
        assert (await querier.query(address, "ping", {}))["ok"] == {"pong": True, "name": "hss"}

        stats = (await querier.query(address, "stats", {}))["ok"]
        assert stats["subscribers"] == 1000 and stats["registered"] == 0 and stats["register"] == 1
        hss_stats = await hss.get_stats()
        assert hss_stats["error_not_found"] == 1 and hss_stats["error_unknown_op"] == 1
        assert hss_stats["error_bad_args"] == 3
        client_stats = await querier.get_stats()
        assert client_stats["client_rx_error"] == 5 and client_stats.get("client_timeout", 0) == 0


async def test_bad_datagrams_are_dropped_and_counted_and_duplicates_answered_from_cache() -> None:
    async with Runtime.attach():
        hss = Hss.start(config={"users": 10}).proxy()
        address = await hss.get_address()
        async with RawPeer() as raw:
            raw.send(b"{this is not json", address)
            raw.send(b"\xff" * 100, address)
            raw.send(b"[" * 61_000, address)  # oversize: over MAX_DATAGRAM, under the UDP limit
            request = encode_request(41, "register", {"impu": "ue0001", "contact": "sip:ue0001@127.0.0.1:1", "expires": 60})
            raw.send(request, address)
            first = await raw.receive()  # the datagrams before it were handled first (one loop, in order)
            raw.send(request, address)  # a retransmission with the same id
            second = await raw.receive()
            raw.send(encode_request(42, "stats"), address)
            stats = decode(await raw.receive()).result
            assert raw.inbox.empty()  # the garbage got no answer
        assert first == second
        reply = json.loads(first)
        assert reply["id"] == 41 and reply["ok"] is True and reply["result"]["expires"] == 60
        assert stats["register"] == 1 and "reregister" not in stats  # executed once
        hss_stats = await hss.get_stats()
        assert hss_stats["dropped_bad_json"] == 2 and hss_stats["dropped_oversize"] == 1
        assert hss_stats["duplicate_answered"] == 1 and hss_stats["rx_request"] == 2
        assert hss_stats["udp_handler_errors"] == 0
        assert await hss.get_address() == address  # alive and serving


async def test_a_sip_actor_uses_the_hss_inside_its_hooks() -> None:
    async with Runtime.attach():
        hss = Hss.start(config={"users": 5}).proxy()
        hss_address = await hss.get_address()
        registrar = Registrar.start(hss_address).proxy()
        registrar_address = await registrar.get_address()

        async with RawPeer() as ue:
            port = ue.endpoint.local_address[1]

            def register(user: str, branch: str, authorization: str | None = None) -> bytes:
                auth = f"Authorization: {authorization}\r\n" if authorization else ""
                return (
                    f"REGISTER sip:ims.example SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
                    f"From: <sip:{user}@ims.example>;tag=1\r\nTo: <sip:{user}@ims.example>\r\n"
                    f"Call-ID: {branch}@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
                    f"{auth}Content-Length: 0\r\n\r\n"
                ).encode()

            ue.send(register("ue0009", "a"), registrar_address)
            assert SipMessage.parse(await ue.receive()).status == 404
            ue.send(register("ue0003", "b"), registrar_address)
            challenge = SipMessage.parse(await ue.receive())
            assert challenge.status == 401
            header = challenge.get("WWW-Authenticate")
            wrong = authorization_for(header, "REGISTER", "sip:ims.example", "ue0003", "nope", "cn", 1)
            ue.send(register("ue0003", "c", wrong), registrar_address)
            assert SipMessage.parse(await ue.receive()).status == 403
            right = authorization_for(header, "REGISTER", "sip:ims.example", "ue0003", "secret", "cn", 2)
            ue.send(register("ue0003", "d", right), registrar_address)
            assert SipMessage.parse(await ue.receive()).status == 200

        querier = Querier.start().proxy()
        lookup = await querier.query(hss_address, "lookup", {"impu": "ue0003"})
        [binding] = lookup["ok"]["bindings"]
        assert binding["contact"] == f"sip:ue0003@127.0.0.1:{port}"
        assert binding["pcscf"] == f"{registrar_address[0]}:{registrar_address[1]}"


async def test_handler_failures_timeouts_and_async_handlers() -> None:
    async with Runtime.attach():
        faulty = Faulty.start("faulty").proxy()
        address = await faulty.get_address()
        querier = Querier.start(timeout=0.3).proxy()
        assert (await querier.query(address, "boom"))["error"] == "internal"
        assert (await querier.query(address, "unserialisable"))["error"] == "internal"
        assert (await querier.query(address, "slow_echo", {"value": [1, "a"]}))["ok"] == [1, "a"]
        # two async handlers run concurrently: the slow one does not hold up the quick one
        # (the slow one's client retransmits meanwhile; the copies are dropped, not re-executed)
        patient = Querier.start(timeout=5.0).proxy()
        slow = asyncio.ensure_future(patient.query(address, "slow_echo", {"value": "slow", "delay": 1.0}))
        quick = await Querier.start().proxy().query(address, "slow_echo", {"value": "quick"})
        assert quick == {"ok": "quick"} and not slow.done()
        assert await asyncio.wait_for(slow, WAIT) == {"ok": "slow"}
        stats = await faulty.get_stats()
        assert stats["handler_errors"] == 1 and stats["encode_errors"] == 1 and stats["error_internal"] == 2
        assert stats["duplicate_in_progress"] >= 1  # copies at 0.25 and 0.75 s on an idle machine
        assert (await patient.get_stats())["client_retransmit"] >= 1

        # a peer that never answers: retransmissions, then ControlTimeout
        before = (await querier.get_stats()).get("client_retransmit", 0)
        async with RawPeer() as silent:
            result = await querier.query(silent.endpoint.local_address[:2], "ping")
            assert "timeout" in result
            received = silent.inbox.qsize()
        after = await querier.get_stats()
        assert after["client_timeout"] == 1
        # the request and its copies all reached the silent peer: normally at 0 and 0.25 s (the
        # next copy, 0.75 s, is after the 0.3 s timeout); a loaded machine may skip the copy
        assert received == 1 + after.get("client_retransmit", 0) - before
        assert received in (1, 2)


async def test_a_control_actor_asks_another_and_a_closed_peer_refuses() -> None:
    async with Runtime.attach():
        hss = Hss.start(config={"users": 2, "user_format": "u{}"}, domain="other.example").proxy()
        address = await hss.get_address()

        class Asker(ControlActor):
            async def ask_hss(self, impu: str) -> Any:
                return await self.control_request(address, "auth_vector", impu=impu)

        asker = Asker.start("asker").proxy()
        assert (await asker.ask_hss("u2"))["impu"] == "sip:u2@other.example"
        with pytest.raises(ControlError) as info:
            await asker.ask_hss("u3")
        assert info.value.code == "not_found"

        peer = await ControlPeer.open()
        peer.close()
        with pytest.raises(ControlError) as closed:
            await peer.request(address, "ping")
        assert closed.value.code == "closed"
