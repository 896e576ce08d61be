"""Media Update's sans-IO core (Algorithm 1 + batch prefetch) driven on a VirtualClock."""

from typing import Any

import pytest

from actors.clock import VirtualClock
from nf_modules.media_scripts import ControlInstruction
from nf_modules.media_update import FetchSets, Prefetcher, Push

FLOW = ("call-1", "A")
G711 = ControlInstruction(codec="PCMU", bitrate_kbps=64.0, ptime_ms=20)
ALAW = ControlInstruction(codec="PCMA", bitrate_kbps=64.0, ptime_ms=20, transcode="ulaw2alaw")


def record(payload: float = 160.0, rate: float = 50.0, jitter: float = 1.0) -> dict[str, Any]:
    return {"payload_size": payload, "packet_rate": rate, "jitter_ms": jitter, "ssrc": 1}


def answers(*instructions: ControlInstruction) -> list[dict[str, Any]]:
    return [{"instruction": i.as_dict(), "rule": "r"} for i in instructions]


class Driver:
    """Arms the prefetcher's one deadline on a VirtualClock and collects what it asks for."""

    def __init__(self, prefetcher: Prefetcher, clock: VirtualClock) -> None:
        self.p, self.clock, self.out = prefetcher, clock, []
        self.handle = None

    def run(self, actions):
        self.out.extend(actions)
        if self.handle is not None:
            self.handle.cancel()
        deadline = self.p.get_timer()
        self.handle = None if deadline is None else self.clock.call_at(deadline, self._fire)
        return actions

    def _fire(self):
        self.handle = None
        self.run(self.p.handle_timer(self.clock.now()))


def test_refactored_answers_from_prefetch_pushes_only_changes_and_refreshes_every_2_s():
    clock = VirtualClock()
    p = Prefetcher(mode="refactored", alpha=0.5, batch=5, refresh=2.0, deviation=0.25)
    d = Driver(p, clock)
    # the first record: nothing prefetched, fetch the actual set (the batch repeats it: deduplicated)
    (fetch,) = d.run(p.on_metadata(FLOW, record(), clock.now()))
    assert fetch == FetchSets(FLOW, ((("payload_size", 160.0), ("packet_rate", 50.0), ("jitter_ms", 1.0)),))
    clock.advance_to(0.01)
    assert d.run(p.on_instructions(FLOW, fetch.as_dicts(), answers(G711), clock.now())) == [Push(FLOW, G711)]
    assert clock.next_deadline() == 2.01  # the refresh, 2 s after the batch arrived
    # the same conditions again: answered from the prefetched set, no push, no fetch
    clock.advance_to(0.1)
    assert d.run(p.on_metadata(FLOW, record(payload=170.0), clock.now())) == []
    assert p.stats["unchanged"] == 1 and p.stats["answered_from_prefetch"] == 1
    # the refresh fetches the forecast batch: level 165 trend 2.5 -> 167.5, 170, ... 177.5
    clock.advance_to(2.01)
    (refresh,) = d.out[-1:]
    assert isinstance(refresh, FetchSets) and len(refresh.sets) == 5
    assert [dict(s)["payload_size"] for s in refresh.sets] == [167.5, 170.0, 172.5, 175.0, 177.5]
    assert clock.next_deadline() is None  # no refresh while one is being fetched
    # the answer keeps G.711: unchanged, nothing pushed; next refresh 2 s later
    clock.advance_to(2.02)
    assert d.run(p.on_instructions(FLOW, refresh.as_dicts(), answers(*[G711] * 5), clock.now())) == []
    assert clock.next_deadline() == 4.02
    assert p.stats["pushes"] == 1 and p.stats["refreshes"] == 1


def test_refactored_deviation_triggers_an_early_fetch_and_a_changed_instruction_is_pushed():
    clock = VirtualClock()
    p = Prefetcher(mode="refactored", alpha=1.0, batch=2, refresh=2.0, deviation=0.25)
    d = Driver(p, clock)
    (fetch,) = d.run(p.on_metadata(FLOW, record(), 0.0))
    d.run(p.on_instructions(FLOW, fetch.as_dicts(), answers(G711), 0.0))
    clock.advance_to(0.5)
    # payload 100: |100 - 160| / 160 = 0.375 > 0.25 -> answered from the prefetched set at once
    # (unchanged G711) and the actual set plus the batch (alpha 1: level 100, trend -60) fetched
    actions = d.run(p.on_metadata(FLOW, record(payload=100.0), clock.now()))
    assert len(actions) == 1 and isinstance(actions[0], FetchSets)
    assert [dict(s)["payload_size"] for s in actions[0].sets] == [100.0, 40.0, -20.0]
    assert p.stats["deviations"] == 1
    # the Media Control says A-law for these conditions: pushed, being a change
    pushed = d.run(p.on_instructions(FLOW, actions[0].as_dicts(), answers(ALAW, G711, G711), 0.6))
    assert pushed == [Push(FLOW, ALAW)]
    assert clock.next_deadline() == 2.6
    # a record close to 100 keeps A-law: nothing to push
    assert d.run(p.on_metadata(FLOW, record(payload=101.0), 0.7)) == []


def test_baseline_fetches_every_record_serially_and_always_pushes():
    p = Prefetcher(mode="baseline")
    (f1,) = p.on_metadata(FLOW, record(), 0.0)
    assert len(f1.sets) == 1
    assert p.on_metadata(FLOW, record(payload=170.0), 0.1) == []  # one at a time: this one waits
    out = p.on_instructions(FLOW, f1.as_dicts(), answers(G711), 0.2)
    assert out[0] == Push(FLOW, G711)  # pushed although it is the first... and
    assert isinstance(out[1], FetchSets) and dict(out[1].sets[0])["payload_size"] == 170.0
    assert p.on_instructions(FLOW, out[1].as_dicts(), answers(G711), 0.3) == [Push(FLOW, G711)]  # unchanged: still pushed
    assert p.get_timer() is None  # no prefetch in baseline
    # a failed fetch releases the held flow unchanged
    (f3,) = p.on_metadata(FLOW, record(), 0.4)
    assert p.on_fetch_failed(FLOW, 0.5) == [Push(FLOW, None)]
    assert p.stats["releases"] == 1 and p.stats["pushes"] == 2


def test_bad_answers_count_as_failures_and_forget_drops_the_flows():
    p = Prefetcher()
    (f,) = p.on_metadata(FLOW, record(), 0.0)
    assert p.on_instructions(FLOW, f.as_dicts(), [{"instruction": {"action": "explode"}}], 0.1) == []
    assert p.stats["bad_answers"] == 1 and p.stats["fetch_failures"] == 1
    assert p.get_timer() == 2.1  # retried at the next refresh
    p.on_metadata(("call-1", "B"), record(), 0.2)
    assert p.forget("call-1") == 2 and p.flows == {}
    assert p.get_timer() is None
    assert p.on_instructions(FLOW, f.as_dicts(), answers(G711), 0.3) == []
    with pytest.raises(ValueError, match="payload_size"):
        p.on_metadata(FLOW, {"packet_rate": 50.0, "jitter_ms": 0.0}, 0.4)


def test_delta_predictor_option_fetches_one_predicted_set():
    p = Prefetcher(predictor="delta")
    (f,) = p.on_metadata(FLOW, record(), 0.0)
    p.on_instructions(FLOW, f.as_dicts(), answers(G711), 0.0)
    (f2,) = p.on_metadata(FLOW, record(payload=100.0), 0.1)  # deviation: actual + delta prediction
    # delta = -60, i = 100 - 160 = -60: 100 - 60 - 60 = -20
    assert [dict(s)["payload_size"] for s in f2.sets] == [100.0, -20.0]


@pytest.mark.parametrize("option, value", [("mode", "fast"), ("predictor", "arima"), ("refresh", 0),
                                           ("deviation", -1), ("alpha", 2), ("batch", 0)])
def test_bad_options_are_refused_by_name(option, value):
    with pytest.raises(ValueError, match=option):
        Prefetcher(**{option: value})
