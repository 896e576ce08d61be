"""The MRFP's Media Update (paper ``004`` VI-A, VII-B, Algorithm 1): metadata in, instructions out.

The Media Processor sends each flow's metadata here (the first of the paper's two interfaces);
Media Update gets control instructions from the MRFC's Media Control and gives them to the Media
Processor through its callback (the second interface). A flow is one direction of a bridge:
``(bridge_id, side)``, the packets arriving on that side's port.

:class:`Prefetcher` is the sans-IO core: it takes ``now`` and returns actions
(:class:`FetchSets`: ask the MRFC for these metadata sets; :class:`Push`: give the Media
Processor this instruction, or ``None`` to release a held flow unchanged), and exposes one next
deadline (:meth:`Prefetcher.get_timer` / :meth:`Prefetcher.handle_timer`).

* ``refactored`` (Algorithm 1 with the batch optimisation): every actual metadata set is answered
  *at once* from the prefetched instructions, with the one whose predicted set is closest;
  a push happens only when that instruction differs from the flow's current one. Every
  ``refresh`` seconds (2 s) per flow, and at once when the actual set is further than
  ``deviation`` from every prefetched set ("observes the deviation of predicted and actual
  metadata values and requests ... prefetching"), the predictor's batch (5 sets) is fetched.
  The packets never wait for any of it.
* ``baseline`` (the serial loop of Fig. 3b): every actual metadata set is sent to the MRFC as it
  comes, and the answer is always pushed, because the Media Processor holds the flow's packets
  until it arrives; a failed fetch releases the flow with its current instruction.

:class:`MediaUpdate` is the actor around it, on its own control-protocol port: op
``metadata(processor, records)`` from the Media Processor, op ``forget(bridge_id)`` when a bridge
whose metadata it sent goes; it calls ``instructions(bridge_id, side, sets)`` on the bridge's Media Control (its
address comes with every record) and ``instructions(items)`` on the Media Processor.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actors.control import ControlActor, ControlFailure
from actors.control_protocol import Address
from nf_modules.media_control import check_mode
from nf_modules.media_prediction import (
    DeltaPredictor,
    MetadataSet,
    SmoothingPredictor,
    closest,
    metadata_set,
)
from nf_modules.media_scripts import ControlInstruction, MediaScriptError

__all__ = ["FetchSets", "FlowKey", "MediaUpdate", "Prefetcher", "Push", "PREDICTORS"]

FlowKey = tuple[str, str]  # (bridge_id, side)
PREDICTORS = ("smoothing", "delta")


@dataclass(frozen=True, slots=True)
class FetchSets:
    """Ask the flow's Media Control for the instructions of ``sets`` (answer with
    :meth:`Prefetcher.on_instructions` or :meth:`Prefetcher.on_fetch_failed`)."""

    flow: FlowKey
    sets: tuple[tuple[tuple[str, float], ...], ...]  # hashable sets; dict(s) for each

    def as_dicts(self) -> list[MetadataSet]:
        return [dict(s) for s in self.sets]


@dataclass(frozen=True, slots=True)
class Push:
    """Give the Media Processor ``instruction`` for ``flow`` (``None``: release it unchanged)."""

    flow: FlowKey
    instruction: ControlInstruction | None


@dataclass(eq=False)
class _Flow:
    predictor: DeltaPredictor | SmoothingPredictor
    prefetched: list[tuple[MetadataSet, ControlInstruction]] = field(default_factory=list)
    current: ControlInstruction | None = None
    fetching: bool = False
    actual: MetadataSet | None = None  # the newest actual set
    waiting: MetadataSet | None = None  # baseline: a set that came while one was being fetched
    next_refresh: float | None = None


class Prefetcher:
    """The sans-IO Media Update; see the module docstring. ``ValueError`` names a bad option."""

    def __init__(
        self,
        *,
        mode: str = "refactored",
        predictor: str = "smoothing",
        alpha: float = 0.5,
        batch: int = 5,
        refresh: float = 2.0,
        deviation: float = 0.25,
    ) -> None:
        self.mode = check_mode(mode)
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r:.40}")
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not refresh > 0:
            raise ValueError(f"refresh must be a number of seconds > 0, got {refresh!r}")
        if isinstance(deviation, bool) or not isinstance(deviation, (int, float)) or not deviation >= 0:
            raise ValueError(f"deviation must be a number >= 0, got {deviation!r}")
        SmoothingPredictor(alpha, batch)  # validates alpha and batch
        self.predictor = predictor
        self.alpha = alpha
        self.batch = batch
        self.refresh = float(refresh)
        self.deviation = float(deviation)
        self.flows: dict[FlowKey, _Flow] = {}
        self._of_bridge: dict[str, set[FlowKey]] = {}  # bridge id -> its keys in flows (forget)
        self.stats: Counter[str] = Counter()
        self._deadlines: list[tuple[float, FlowKey]] = []  # heap, stale entries skipped

    # -- input ----------------------------------------------------------------------------------

    def on_metadata(self, flow: FlowKey, record: Mapping[str, Any], now: float) -> list[FetchSets | Push]:
        """An actual metadata record of ``flow``; ``ValueError`` if it lacks a metadata value."""
        actual = metadata_set(record)
        state = self.flows.get(flow)
        if state is None:
            state = self.flows[flow] = _Flow(
                DeltaPredictor() if self.predictor == "delta" else SmoothingPredictor(self.alpha, self.batch))
            self._of_bridge.setdefault(flow[0], set()).add(flow)
        self.stats["metadata"] += 1
        state.actual = actual
        if self.mode == "baseline":
            if state.fetching:
                state.waiting = actual
                return []
            return [self._fetch(flow, state, [actual])]
        predicted = self._observe(state, actual)
        out: list[FetchSets | Push] = []
        if state.prefetched:
            index, gap = closest(actual, [s for s, _ in state.prefetched])
            self.stats["answered_from_prefetch"] += 1
            push = self._choose(flow, state, state.prefetched[index][1])
            if push is not None:
                out.append(push)
            if gap <= self.deviation:
                return out
            self.stats["deviations"] += 1
        if not state.fetching:  # the first set of the flow, or a deviation: the actual set and the batch
            out.append(self._fetch(flow, state, [actual, *predicted]))
        return out

    def on_instructions(self, flow: FlowKey, sets: list[MetadataSet], answers: list[Any], now: float) -> list[FetchSets | Push]:
        """The Media Control's answers (``[{"instruction": {...}, ...}]``) for ``sets``."""
        state = self.flows.get(flow)
        if state is None:  # forgotten meanwhile
            return []
        state.fetching = False
        try:
            if not isinstance(answers, list) or len(answers) != len(sets):
                raise ValueError(f"{len(sets)} sets got {answers!r:.80}")
            instructions = [ControlInstruction.from_dict(a["instruction"]) for a in answers]
        except (ValueError, KeyError, TypeError, MediaScriptError) as error:
            self.stats["bad_answers"] += 1
            return self.on_fetch_failed(flow, now, reason=str(error))
        self.stats["sets_answered"] += len(sets)
        if self.mode == "baseline":
            state.current = instructions[0]
            self.stats["pushes"] += 1
            out: list[FetchSets | Push] = [Push(flow, instructions[0])]
            if state.waiting is not None:
                waiting, state.waiting = state.waiting, None
                out.append(self._fetch(flow, state, [waiting]))
            return out
        state.prefetched = list(zip(sets, instructions))
        self._schedule(flow, state, now + self.refresh)
        if state.actual is None:
            return []
        index, _ = closest(state.actual, sets)
        push = self._choose(flow, state, instructions[index])
        return [push] if push is not None else []

    def on_fetch_failed(self, flow: FlowKey, now: float, *, reason: str = "") -> list[FetchSets | Push]:
        state = self.flows.get(flow)
        if state is None:
            return []
        state.fetching = False
        self.stats["fetch_failures"] += 1
        if self.mode == "baseline":  # the flow is held: let it go with what it has
            self.stats["releases"] += 1
            out: list[FetchSets | Push] = [Push(flow, None)]
            if state.waiting is not None:
                waiting, state.waiting = state.waiting, None
                out.append(self._fetch(flow, state, [waiting]))
            return out
        self._schedule(flow, state, now + self.refresh)
        return []

    def forget(self, bridge_id: str) -> int:
        """Drop the flows of a bridge; how many there were."""
        gone = 0
        for key in self._of_bridge.pop(bridge_id, ()):  # an index: no scan of every flow
            if self.flows.pop(key, None) is not None:
                gone += 1
        return gone

    # -- time -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next refresh deadline (refactored mode), or ``None``."""
        heap = self._deadlines
        while heap:
            deadline, flow = heap[0]
            state = self.flows.get(flow)
            if state is not None and state.next_refresh == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[FetchSets | Push]:
        """Refresh the prefetched batch of every flow whose deadline has come."""
        out: list[FetchSets | Push] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, flow = heapq.heappop(heap)
            state = self.flows.get(flow)
            if state is None or state.next_refresh != deadline:
                continue
            state.next_refresh = None
            if state.fetching or state.actual is None:
                continue
            self.stats["refreshes"] += 1
            out.append(self._fetch(flow, state, self._forecast(state)))
        return out

    # -- helpers ----------------------------------------------------------------------------------

    def _observe(self, state: _Flow, actual: MetadataSet) -> list[MetadataSet]:
        predictor = state.predictor
        if isinstance(predictor, DeltaPredictor):
            return [predictor.observe(actual)]
        predictor.observe(actual)
        return predictor.forecast()

    def _forecast(self, state: _Flow) -> list[MetadataSet]:
        predictor = state.predictor
        if isinstance(predictor, DeltaPredictor):
            return [dict(predictor.predicted or state.actual or {})]
        return predictor.forecast()

    def _fetch(self, flow: FlowKey, state: _Flow, sets: list[MetadataSet]) -> FetchSets:
        unique: dict[tuple[tuple[str, float], ...], None] = {}
        for s in sets:
            unique.setdefault(tuple((k, round(v, 3)) for k, v in s.items()), None)
        state.fetching = True
        self.stats["fetches"] += 1
        self.stats["sets_requested"] += len(unique)
        return FetchSets(flow, tuple(unique))

    def _choose(self, flow: FlowKey, state: _Flow, instruction: ControlInstruction) -> Push | None:
        if instruction == state.current:
            self.stats["unchanged"] += 1
            return None
        state.current = instruction
        self.stats["pushes"] += 1
        return Push(flow, instruction)

    def _schedule(self, flow: FlowKey, state: _Flow, deadline: float) -> None:
        state.next_refresh = deadline
        heapq.heappush(self._deadlines, (deadline, flow))


class MediaUpdate(ControlActor):
    """The Media Update actor (``kind = "mrfp.media_update"``); handlers run on its loop.

    Options are :class:`Prefetcher`'s (``mode``, ``predictor``, ``alpha``, ``batch``,
    ``refresh``, ``deviation``); ``control_timeout``: how long a request to the Media Control or
    the Media Processor may take.
    """

    kind: ClassVar[str] = "mrfp.media_update"

    def __init__(
        self,
        name: str,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        mode: str = "refactored",
        predictor: str = "smoothing",
        alpha: float = 0.5,
        batch: int = 5,
        refresh: float = 2.0,
        deviation: float = 0.25,
        control_timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.prefetcher = Prefetcher(mode=mode, predictor=predictor, alpha=alpha, batch=batch,
                                     refresh=refresh, deviation=deviation)
        self.control_timeout = control_timeout
        self.stats: Counter[str] = Counter()
        self._routes: dict[FlowKey, tuple[Address, Address]] = {}  # flow -> (media control, processor)
        self._route_keys: dict[str, set[FlowKey]] = {}  # bridge id -> its keys in _routes
        self._pushes: dict[Address, dict[FlowKey, ControlInstruction | None]] = {}
        self._flush_scheduled = False
        self._timer: Any = None
        self._timer_deadline: float | None = None
        self._tasks: set[Any] = set()

    def on_stop(self) -> None:
        self._cancel()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._cancel()
        super().on_failure(*exc_info)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()

    # -- the first interface: metadata from the Media Processor (on the actor's loop) ---------------

    def handle_metadata(self, processor: list[Any], records: list[dict[str, Any]]) -> dict[str, int]:
        """``records``: ``{"bridge_id", "side", "controller": [host, port], <metadata>}`` each."""
        proc = _address(processor)
        if proc is None or not isinstance(records, list):
            self.stats["bad_metadata"] += 1
            return {"accepted": 0}
        now = self.now
        accepted = 0
        for record in records:
            try:
                flow = (str(record["bridge_id"]), str(record["side"]))
                controller = _address(record["controller"])
                if controller is None:
                    raise ValueError("no controller address")
            except (KeyError, TypeError, ValueError) as error:
                self.stats["bad_metadata"] += 1
                self.log.debug("metadata_dropped", error=str(error))
                continue
            if flow not in self._routes:
                self._route_keys.setdefault(flow[0], set()).add(flow)
            self._routes[flow] = (controller, proc)
            try:
                actions = self.prefetcher.on_metadata(flow, record, now)
            except ValueError as error:  # a metadata value missing or not finite
                self.stats["bad_metadata"] += 1
                self.log.debug("metadata_dropped", error=str(error))
                if record.get("held"):  # never leave a held flow waiting for nothing
                    self._run([Push(flow, None)])
                continue
            accepted += 1
            self._run(actions)
        self._arm_timer()
        return {"accepted": accepted}

    def handle_forget(self, bridge_id: str) -> dict[str, int]:
        flows = self.prefetcher.forget(str(bridge_id))
        for key in self._route_keys.pop(bridge_id, ()) if isinstance(bridge_id, str) else ():
            del self._routes[key]
        return {"forgotten": flows}

    # -- queries (asks) --------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out.update({f"update_{k}": v for k, v in self.prefetcher.stats.items()})
        out.update(self.stats)
        out["update_flows"] = len(self.prefetcher.flows)
        return out

    def get_current(self) -> dict[str, dict[str, Any] | None]:
        """Each flow's current instruction, keyed ``"bridge_id/side"``."""
        return {f"{b}/{s}": (f.current.as_dict() if f.current else None)
                for (b, s), f in self.prefetcher.flows.items()}

    # -- actions ---------------------------------------------------------------------------------------

    def _run(self, actions: list[FetchSets | Push]) -> None:
        for action in actions:
            if type(action) is Push:
                route = self._routes.get(action.flow)
                if route is not None:
                    self._pushes.setdefault(route[1], {})[action.flow] = action.instruction
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        self.loop.call_soon(self._flush_pushes)
            else:
                self._run_task(self._fetch(action))  # type: ignore[arg-type]

    def _run_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, action: FetchSets) -> None:
        route = self._routes.get(action.flow)
        sets = action.as_dicts()
        if route is None:
            self._run(self.prefetcher.on_fetch_failed(action.flow, self.now, reason="no route"))
            return
        bridge_id, side = action.flow
        try:
            answers = await self.control.call(  # type: ignore[union-attr]
                route[0], "instructions", {"bridge_id": bridge_id, "side": side, "sets": sets},
                timeout=self.control_timeout)
        except (ControlFailure, ValueError) as error:
            self.stats[f"fetch_failed_{getattr(error, 'code', 'timeout')}"] += 1
            self._run(self.prefetcher.on_fetch_failed(action.flow, self.now, reason=str(error)))
        else:
            self._run(self.prefetcher.on_instructions(action.flow, sets, answers, self.now))
        self._arm_timer()

    def _flush_pushes(self) -> None:
        """The second interface: one ``instructions`` request per Media Processor per loop turn."""
        self._flush_scheduled = False
        pushes, self._pushes = self._pushes, {}
        for processor, flows in pushes.items():
            items = [{"bridge_id": b, "side": s, "instruction": None if i is None else i.as_dict()}
                     for (b, s), i in flows.items()]
            self._run_task(self._push(processor, items))

    async def _push(self, processor: Address, items: list[dict[str, Any]]) -> None:
        try:
            await self.control.call(processor, "instructions", {"items": items},  # type: ignore[union-attr]
                                    timeout=self.control_timeout)
            self.stats["pushed_items"] += len(items)
        except (ControlFailure, ValueError) as error:
            self.stats["push_failed"] += 1
            self.log.info("push_failed", error=str(error))

    def _arm_timer(self) -> None:
        deadline = self.prefetcher.get_timer()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.clock.call_at(deadline, self._timer_fired)  # type: ignore[union-attr]

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self._run(self.prefetcher.handle_timer(self.now))
        self._arm_timer()


def _address(value: Any) -> Address | None:
    if (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 < value[1] < 65536):
        return (value[0], value[1])
    return None
