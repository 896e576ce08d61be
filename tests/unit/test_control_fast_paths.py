"""The cheap paths of the media-control plumbing answer exactly what the general ones did:
ControlPeer's argument check (sets before ``Signature.bind``) and its lazily moved timer, the
shared JSON encoder/decoder, ``FlowStats`` built without its frozen ``__init__``, and Media
Update's per-bridge index for ``forget``."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import socket
import time
from typing import Any

import pytest

from actors.control import ControlError, ControlPeer, ControlTimeout
from actors.control_protocol import Request, Response, decode, encode_request, encode_result
from nf_modules.mediacore.engine import FlowStats
from nf_modules.media_update import Prefetcher


class Owner:
    def handle_plain(self, a: int, b: int = 2, *, c: int = 3) -> dict[str, int]:
        return {"a": a, "b": b, "c": c}

    def handle_positional(self, a: int, /) -> int:
        return a

    def handle_any(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def handle_future(self) -> asyncio.Future[int]:  # sync, but returns an awaitable
        future = asyncio.get_running_loop().create_future()
        future.set_result(7)
        return future


def _bind_error(function: Any, args: dict[str, Any]) -> str:
    try:
        inspect.signature(function).bind(**args)
    except TypeError as error:
        return str(error)
    raise AssertionError("bind accepted")


async def test_argument_check_answers_like_signature_bind() -> None:
    owner = Owner()
    server = await ControlPeer.open(owner)
    client = await ControlPeer.open(None)
    try:
        assert await client.call(server.address, "plain", {"a": 1}) == {"a": 1, "b": 2, "c": 3}
        assert await client.call(server.address, "plain", {"a": 1, "b": 5, "c": 6}) == {"a": 1, "b": 5, "c": 6}
        assert await client.call(server.address, "any", {"x": 1}) == {"x": 1}
        assert await client.call(server.address, "future", {}) == 7
        for op, args in [("plain", {}), ("plain", {"a": 1, "d": 4}), ("plain", {"b": 1}), ("positional", {"a": 1})]:
            with pytest.raises(ControlError) as caught:
                await client.call(server.address, op, args)
            assert caught.value.code == "bad_args"
            assert caught.value.message == _bind_error(getattr(owner, f"handle_{op}"), args)
        assert server.get_stats()["error_bad_args"] == 4
    finally:
        client.close()
        server.close()


async def test_timer_kept_after_a_reply_still_retransmits_and_times_out_on_time() -> None:
    server = await ControlPeer.open(Owner())
    client = await ControlPeer.open(None, timeout=0.5, retransmit=0.1)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        assert await client.call(server.address, "plain", {"a": 1}) == {"a": 1, "b": 2, "c": 3}
        started = time.monotonic()
        with pytest.raises(ControlTimeout):
            await client.call(silent.getsockname(), "plain", {"a": 1})
        assert 0.45 <= time.monotonic() - started < 0.9
        copies = 0
        while True:
            try:
                silent.recv(1000)
            except BlockingIOError:
                break
            copies += 1
        assert copies == 3  # sent at 0, 0.1, 0.3; the next (0.7) is past the 0.5 s timeout
        assert client.get_stats()["client_retransmit"] == 2
    finally:
        silent.close()
        client.close()
        server.close()


def test_shared_json_encoder_and_decoder_round_trip() -> None:
    data = encode_request(5, "update", {"host": "h\u00e9", "n": 1.5, "none": None, "list": [True, False]})
    assert data == b'{"v":1,"id":5,"op":"update","args":{"host":"h\xc3\xa9","n":1.5,"none":null,"list":[true,false]}}'
    assert decode(data) == Request(5, "update", {"host": "h\u00e9", "n": 1.5, "none": None, "list": [True, False]})
    assert decode(encode_result(6, {"a": [1]})) == Response(6, True, {"a": [1]})
    # what json.loads detects by itself (a BOM, UTF-16) still reads the same
    text = '{"v":1,"id":7,"op":"x"}'
    assert decode(b"\xef\xbb\xbf" + text.encode()) == Request(7, "x", {})
    assert decode(text.encode("utf-16-le")) == Request(7, "x", {})


def _raw_stats() -> dict[str, Any]:
    return {
        "flow_id": 3, "packets": 10, "bytes": 1720, "payload_bytes": 1600, "ssrc": 9, "lost": 0,
        "highest_seq": 12, "jitter_ms": 0.5, "latency_count": 10, "latency_p50_ms": 1.0,
        "latency_p90_ms": None, "latency_p99_ms": 2.0, "latency_p999_ms": 2.5, "latency_max_ms": 3.0,
        "held": False, "held_packets": 0, "hold_queue": 0, "hold_time_ms": 0.0, "recorded_bytes": 0,
        "version": 4, "drops": {"no_dest": 1}, "latency_buckets": [(1000, 1015, 4), (2000, 2031, 6)],
    }


def test_flow_stats_from_dict_is_the_dataclass_built_by_its_init() -> None:
    stats = FlowStats.from_dict(_raw_stats())
    fields = [f.name for f in dataclasses.fields(FlowStats)]
    assert list(vars(stats)) == fields
    assert math.isnan(stats.p90) and stats.p50 == 1.0 and stats.max == 3.0
    assert stats.latency_buckets == ((1.0, 1.015, 4), (2.0, 2.031, 6))
    expected = FlowStats(**{name: getattr(stats, name) for name in fields})
    assert repr(stats) == repr(expected)
    assert stats.as_dict().keys() == dataclasses.asdict(expected).keys()
    assert stats.as_dict()["drops"] == {"no_dest": 1} and stats.as_dict()["drops"] is not stats.drops
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.bytes = 0  # type: ignore[misc]


def test_prefetcher_forget_drops_only_that_bridges_flows() -> None:
    p = Prefetcher(mode="refactored")
    record = {"payload_size": 160.0, "packet_rate": 50.0, "jitter_ms": 1.0, "lost": 0, "latency_ms": 1.0}
    for key in [("b1", "A"), ("b1", "B"), ("b2", "A")]:
        p.on_metadata(key, record, 0.0)
    assert p.forget("b1") == 2 and set(p.flows) == {("b2", "A")}
    assert p.forget("b1") == 0 and p.forget("nope") == 0
    p.on_metadata(("b1", "A"), record, 1.0)  # a bridge id seen again is indexed again
    assert p.forget("b1") == 1 and p.forget("b2") == 1 and p.flows == {}
