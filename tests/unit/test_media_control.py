"""The MRFC's Media Control: scripts run on metadata, fetches per mode, emulated capacity."""

import asyncio
from typing import Any

import pytest

from actors.clock import VirtualClock
from actors.control import ControlError
from nf_modules.media_control import MediaControl, ScriptFetchError
from nf_modules.media_scripts import ScriptLibrary, parse_script

ROOT = "http://as.example/scripts/call"
LIBRARY = {
    "call": {"rules": [
        {"name": "g711", "when": {"payload_size": [160, 240], "packet_rate": [30, 50]},
         "then": {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}},
        {"name": "narrow", "fetch": "narrow"},
    ]},
    "narrow": {"rules": [{"name": "alaw", "then": {"codec": "PCMA", "transcode": "ulaw2alaw"}}]},
    "loop": {"rules": [{"fetch": "loop"}]},
}
BAD = {"rules": [{"then": {"codec": "G729"}}]}


class FakeFetcher:
    """Serves LIBRARY by URL, counting each GET (no sockets in unit tests)."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.stats: dict[str, int] = {}

    async def fetch(self, url: str):
        self.gets.append(url)
        name = url.rsplit("/", 1)[1]
        if name == "down":
            raise ScriptFetchError(f"GET {url}: HTTP 503")
        if name == "bad":
            return parse_script(BAD)  # raises MediaScriptError
        return parse_script(LIBRARY[name])

    async def close(self) -> None:
        pass


def m(payload: float, rate: float = 50.0) -> dict[str, Any]:
    return {"payload_size": payload, "packet_rate": rate, "jitter_ms": 0.0}


async def test_baseline_fetches_the_scripts_for_every_set_refactored_caches_them_per_call():
    narrow = "http://as.example/scripts/narrow"  # resolved against the root's URL
    for mode, expected_gets in (("baseline", [ROOT, ROOT, narrow] * 2), ("refactored", [ROOT, narrow])):
        fetcher = FakeFetcher()
        control = MediaControl(mode=mode, fetcher=fetcher)  # type: ignore[arg-type]
        control.register("c1", ROOT)
        out = await control.control_instructions("c1", "A", [m(160), m(100)])
        assert [o["rule"] for o in out] == ["g711", "alaw"]
        assert out[1]["instruction"]["transcode"] == "ulaw2alaw"
        await control.control_instructions("c1", "A", [m(160), m(100)])
        # baseline: root for each set, plus the finer script for the narrow one: 3 per request
        assert fetcher.gets == expected_gets, mode
        control.forget("c1")
        with pytest.raises(ControlError) as caught:
            await control.control_instructions("c1", "A", [m(160)])
        assert caught.value.code == "not_found"


async def test_calls_without_a_script_url_run_the_builtin_library_without_fetching():
    fetcher = FakeFetcher()
    control = MediaControl(fetcher=fetcher, default_library=ScriptLibrary(LIBRARY))  # type: ignore[arg-type]
    control.register("c1", None)
    out = await control.control_instructions("c1", "B", [m(200), m(50)])
    assert [o["rule"] for o in out] == ["g711", "alaw"] and fetcher.gets == []


@pytest.mark.parametrize("url, fragment", [
    ("http://as.example/scripts/loop", "more than 4 scripts deep"),
    ("http://as.example/scripts/down", "HTTP 503"),
    ("http://as.example/scripts/bad", "codec"),
])
async def test_script_failures_are_control_errors_with_the_reason(url, fragment):
    control = MediaControl(fetcher=FakeFetcher())  # type: ignore[arg-type]
    control.register("c1", url)
    with pytest.raises(ControlError) as caught:
        await control.control_instructions("c1", "A", [m(160)])
    assert caught.value.code == "script_failed" and fragment in caught.value.message


@pytest.mark.parametrize("side, sets", [("C", [m(160)]), ("A", []), ("A", [{"payload_size": 1}]), ("A", "x")])
async def test_bad_requests_are_bad_args(side, sets):
    control = MediaControl(fetcher=FakeFetcher())  # type: ignore[arg-type]
    control.register("c1", None)
    with pytest.raises(ControlError) as caught:
        await control.control_instructions("c1", side, sets)
    assert caught.value.code == "bad_args"


async def test_capacity_queues_sets_for_their_service_slots_and_refuses_past_the_queue():
    clock = VirtualClock()
    control = MediaControl(clock=clock, capacity=100, queue_limit=4, fetcher=FakeFetcher())  # type: ignore[arg-type]
    control.register("c1", None)
    first = asyncio.ensure_future(control.control_instructions("c1", "A", [m(160), m(170)]))
    second = asyncio.ensure_future(control.control_instructions("c1", "A", [m(180)]))
    await asyncio.sleep(0)
    assert clock.next_deadline() == 0.02  # two sets at 100/s
    with pytest.raises(ControlError) as caught:  # 3 queued + 2 > 4
        await control.control_instructions("c1", "A", [m(160), m(160)])
    assert caught.value.code == "overloaded"
    clock.advance_to(0.02)
    assert len(await first) == 2 and not second.done()
    clock.advance_to(0.03)
    assert len(await second) == 1
    assert control.get_stats()["media_control_rejected"] == 1


def test_bad_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="mode"):
        MediaControl(mode="fast")
