"""The MRF's dialog state machine (paper ``004``, section V-B and Fig. 5c), as a data table.

The MRFC keeps one dialog per media session the AS sets up (RFC 4240 style: the AS sends an
INVITE to the MRFC before it forwards the call), to "keep track of user states in ... data-plane".
It is created in **Start** when the AS's INVITE arrives, goes **Created** once the MRFP's
resources are reserved and the 200 (with the MRFP's media address) is sent to the AS ("MRF
transitions to Created state by sending an acknowledgement regarding data-plane dialogue setup to
AS"), **Progressing** when the callee's provisional answer reaches the AS and the AS updates the
MRF, **Connected** on the final answer ("control-plane connection has been established ... and
multimedia traffic can flow at any time"), and **Ended** when the AS releases it.

The paper's hanging state machine: when S-CSCF's Incoming Leg Control fails, the P-CSCF clears
the call (Mortal, then Morgue) but its BYE never reaches the AS, so the MRF dialog stays
Connected and the MRFP keeps forwarding the callee's media. :meth:`MrfDialog.is_hanging` and
:meth:`MrfDialogTable.hanging` find such dialogs for the fault experiments.

Events (:class:`MrfEvent`) and the SIP or control message behind each::

    RESERVED   MRFP resources reserved (control protocol) and the 200 answered to the AS
    REJECTED   the AS's INVITE was refused (no resources: 4xx/5xx; 487 after the AS's CANCEL)
    ACK        the AS's ACK for the 200
    PROGRESS   the callee's 18x reached the AS, which updated the MRF (early media SDP)
    ANSWER     the callee's final answer reached the AS, which updated the MRF (answer SDP)
    UPDATE     a mid-session media change (re-INVITE / UPDATE with new SDP)
    RELEASE    the AS's BYE (or the MRFC releases the resources itself)
    TIMEOUT    a transaction with the AS timed out, or a session / media inactivity timer fired

Transition table (:data:`MRF_TABLE`; anything else raises :class:`MrfTransitionError`)::

    Start        --RESERVED-->  Created
    Start        --REJECTED, RELEASE, TIMEOUT-->  Ended
    Created      --PROGRESS-->  Progressing
    Created      --ANSWER-->    Connected       final answer without a provisional
    Created      --ACK, UPDATE-->  Created
    Progressing  --PROGRESS, ACK, UPDATE-->  Progressing
    Progressing  --ANSWER-->    Connected
    Connected    --ANSWER, ACK, UPDATE-->  Connected   repeated answer, late ACK, re-INVITE
    Created, Progressing, Connected  --RELEASE, TIMEOUT-->  Ended
    Ended        --RELEASE, ACK, TIMEOUT-->  Ended     late retransmissions

Self-loops are legal but not recorded in the history. Everything here is plain data driven by the
MRFC actor with ``now`` (its clock, on its loop); it catches :class:`MrfTransitionError`, counts it
and keeps going.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from typing import Any, Callable, Iterator

__all__ = [
    "MrfState",
    "MrfEvent",
    "MRF_TABLE",
    "FINAL_STATES",
    "MrfTransitionError",
    "MrfDialog",
    "MrfDialogTable",
    "DEFAULT_LINGER",
]

#: How long an Ended dialog stays in the table (seconds): RFC 3261's Timer J / 64*T1.
DEFAULT_LINGER = 32.0


class MrfState(enum.Enum):
    """The states of Fig. 5c; the values are the paper's names (the keys of ``counts()``)."""

    START = "Start"
    CREATED = "Created"
    PROGRESSING = "Progressing"
    CONNECTED = "Connected"
    ENDED = "Ended"


class MrfEvent(enum.Enum):
    RESERVED = "MRFP resources reserved, 200 sent to the AS"
    REJECTED = "the AS's INVITE refused"
    ACK = "ACK from the AS"
    PROGRESS = "the callee's 18x relayed by the AS"
    ANSWER = "the callee's final answer relayed by the AS"
    UPDATE = "mid-session media change"
    RELEASE = "BYE from the AS, or released by the MRFC"
    TIMEOUT = "a transaction or session timer expired"


_S = MrfState
_E = MrfEvent


def _rows() -> dict[tuple[MrfState, MrfEvent], MrfState]:
    t: dict[tuple[MrfState, MrfEvent], MrfState] = {}

    def row(state: MrfState, events: tuple[MrfEvent, ...], new: MrfState) -> None:
        for event in events:
            t[(state, event)] = new

    row(_S.START, (_E.RESERVED,), _S.CREATED)
    row(_S.START, (_E.REJECTED, _E.RELEASE, _E.TIMEOUT), _S.ENDED)
    row(_S.CREATED, (_E.PROGRESS,), _S.PROGRESSING)
    row(_S.CREATED, (_E.ANSWER,), _S.CONNECTED)
    row(_S.CREATED, (_E.ACK, _E.UPDATE), _S.CREATED)
    row(_S.PROGRESSING, (_E.PROGRESS, _E.ACK, _E.UPDATE), _S.PROGRESSING)
    row(_S.PROGRESSING, (_E.ANSWER,), _S.CONNECTED)
    row(_S.CONNECTED, (_E.ANSWER, _E.ACK, _E.UPDATE), _S.CONNECTED)
    for live in (_S.CREATED, _S.PROGRESSING, _S.CONNECTED):
        row(live, (_E.RELEASE, _E.TIMEOUT), _S.ENDED)
    row(_S.ENDED, (_E.RELEASE, _E.ACK, _E.TIMEOUT), _S.ENDED)
    return t


#: (state, event) -> new state; a missing pair is an illegal transition.
MRF_TABLE: dict[tuple[MrfState, MrfEvent], MrfState] = _rows()

#: States a dialog never leaves (not "hanging", removed after the linger time).
FINAL_STATES = frozenset({MrfState.ENDED})


class MrfTransitionError(Exception):
    """No transition for ``event`` in ``state``; the dialog is unchanged.

    Attributes: ``machine`` (``"MRF"``), ``key`` (the dialog's key), ``state``, ``event``.
    """

    def __init__(self, key: tuple[str, str], state: MrfState, event: MrfEvent) -> None:
        self.machine = "MRF"
        self.key = key
        self.state = state
        self.event = event
        super().__init__(f"MRF dialog {key[0]!r}/{key[1]!r}: no transition from "
                         f"{state.value} on {event.name}")


def _key(call_id: str, from_tag: str) -> tuple[str, str]:
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"call_id must be a non-empty string, got {call_id!r}")
    if not isinstance(from_tag, str) or not from_tag:
        raise ValueError(f"from_tag must be a non-empty string, got {from_tag!r}")
    return (call_id, from_tag)


class MrfDialog:
    """One media session as the MRFC sees it, keyed by (Call-ID, From tag) of the AS's INVITE.

    State: ``state``, ``history`` (a list of ``(MrfState, at)``, one entry per state entered,
    starting with ``(START, created_at)``), ``last_event``, ``entered_by``.

    Opaque media-side fields the MRFC fills in and reads back (never interpreted here):
    ``resource_ids`` (the MRFP's resource / flow ids), ``ports`` (a dict, e.g. leg name ->
    MRFP port), ``call_ref`` (the subscriber call this session serves, e.g. its Call-ID),
    ``to_tag`` (the MRFC's tag in the dialog with the AS), ``data`` (anything else).
    """

    __slots__ = ("call_id", "from_tag", "created_at", "state", "history", "last_event",
                 "entered_by", "resource_ids", "ports", "call_ref", "to_tag", "data",
                 "_listener")

    def __init__(self, call_id: str, from_tag: str, created_at: float) -> None:
        _key(call_id, from_tag)
        if isinstance(created_at, bool) or not isinstance(created_at, (int, float)) \
                or not math.isfinite(created_at):
            raise ValueError(f"created_at must be a finite number, got {created_at!r}")
        self.call_id = call_id
        self.from_tag = from_tag
        self.created_at = float(created_at)
        self.state = MrfState.START
        self.history: list[tuple[MrfState, float]] = [(MrfState.START, self.created_at)]
        self.last_event: MrfEvent | None = None
        self.entered_by: MrfEvent | None = None
        self.resource_ids: list[Any] = []
        self.ports: dict[str, Any] = {}
        self.call_ref: Any = None
        self.to_tag: str | None = None
        self.data: dict[str, Any] = {}
        self._listener: Callable[[MrfDialog, MrfState, float], None] | None = None

    def __repr__(self) -> str:
        return f"<MrfDialog {self.call_id!r}/{self.from_tag!r} {self.state.value}>"

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.from_tag)

    @property
    def entered_at(self) -> float:
        return self.history[-1][1]

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def on_event(self, event: MrfEvent, now: float) -> MrfState:
        """Apply ``event`` at ``now``; return the (possibly unchanged) state.

        Raises :class:`MrfTransitionError` (state unchanged) when the table has no row,
        ``TypeError`` for something that is not an :class:`MrfEvent`, ``ValueError`` when
        ``now`` is earlier than the last state change.
        """
        if type(event) is not MrfEvent:
            raise TypeError(f"event must be an MrfEvent, got {event!r}")
        old = self.state
        new = MRF_TABLE.get((old, event))
        if new is None:
            raise MrfTransitionError(self.key, old, event)
        if now < self.history[-1][1]:
            raise ValueError(f"now={now!r} is earlier than the last state change at "
                             f"{self.history[-1][1]!r}")
        self.last_event = event
        if new is not old:
            self.state = new
            self.entered_by = event
            self.history.append((new, now))
            if self._listener is not None:
                self._listener(self, old, now)
        return new

    def time_in_state(self, now: float) -> float:
        return now - self.history[-1][1]

    def is_hanging(self, now: float, threshold: float) -> bool:
        """Stuck in a non-final state (anything but Ended) for longer than ``threshold``
        seconds. Connected counts too: pick a threshold above the calls' holding time."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not threshold >= 0:
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        return self.state not in FINAL_STATES and now - self.history[-1][1] > threshold


class MrfDialogTable:
    """``MrfDialogTable(*, linger=32.0)``: the MRFC's dialogs by (Call-ID, From tag).

    :meth:`create` / :meth:`add`, :meth:`get`, :meth:`find` (by Call-ID and the tags of a
    request in either direction), :meth:`by_call_id`, :meth:`by_call_ref`, :meth:`remove`;
    :meth:`counts` per state (kept incrementally); :meth:`hanging`; Ended dialogs are removed
    ``linger`` seconds after they ended (:meth:`get_timer`, :meth:`purge` /
    :meth:`handle_timer`).
    """

    def __init__(self, *, linger: float = DEFAULT_LINGER) -> None:
        if isinstance(linger, bool) or not isinstance(linger, (int, float)) \
                or not math.isfinite(linger) or linger < 0:
            raise ValueError(f"linger must be a finite number >= 0, got {linger!r}")
        self.linger = float(linger)
        self._dialogs: dict[tuple[str, str], MrfDialog] = {}
        self._by_call_id: dict[str, list[MrfDialog]] = {}
        self._counts: dict[MrfState, int] = {s: 0 for s in MrfState}
        self._ended: list[tuple[float, int, MrfDialog]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[MrfDialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._dialogs

    def create(self, call_id: str, from_tag: str, now: float) -> MrfDialog:
        """A new dialog in Start. ``ValueError`` if the key is already in the table."""
        return self.add(MrfDialog(call_id, from_tag, now))

    def add(self, dialog: MrfDialog) -> MrfDialog:
        if dialog.key in self._dialogs:
            raise ValueError(f"an MRF dialog {dialog.call_id!r}/{dialog.from_tag!r} "
                             f"already exists")
        if dialog._listener is not None:
            raise ValueError(f"{dialog!r} already belongs to a table")
        self._dialogs[dialog.key] = dialog
        self._by_call_id.setdefault(dialog.call_id, []).append(dialog)
        self._counts[dialog.state] += 1
        dialog._listener = self._state_changed
        if dialog.state in FINAL_STATES:
            self._bury(dialog, dialog.entered_at)
        return dialog

    def get(self, call_id: str, from_tag: str) -> MrfDialog | None:
        return self._dialogs.get((call_id, from_tag))

    def remove(self, call_id: str, from_tag: str) -> MrfDialog | None:
        """Forget a dialog now (whatever its state); ``None`` if it is not here."""
        dialog = self._dialogs.pop((call_id, from_tag), None)
        if dialog is None:
            return None
        siblings = self._by_call_id[call_id]
        siblings.remove(dialog)
        if not siblings:
            del self._by_call_id[call_id]
        self._counts[dialog.state] -= 1
        dialog._listener = None
        return dialog

    def find(self, call_id: str, from_tag: str | None,
             to_tag: str | None = None) -> MrfDialog | None:
        """The dialog an in-dialog request belongs to: from the AS it has the dialog's From
        tag; from the MRFC's side of the dialog the dialog's From tag is its To tag."""
        if from_tag is not None:
            dialog = self._dialogs.get((call_id, from_tag))
            if dialog is not None:
                return dialog
        if to_tag is not None:
            dialog = self._dialogs.get((call_id, to_tag))
            if dialog is not None and (dialog.to_tag is None or dialog.to_tag == from_tag):
                return dialog
        return None

    def by_call_id(self, call_id: str) -> list[MrfDialog]:
        return list(self._by_call_id.get(call_id, ()))

    def by_call_ref(self, call_ref: Any) -> list[MrfDialog]:
        """The dialogs serving a subscriber call (linear scan: for queries, not per packet)."""
        return [d for d in self._dialogs.values() if d.call_ref == call_ref]

    def counts(self) -> dict[str, int]:
        """Dialogs per state, every state present, keyed by the paper's names."""
        return {state.value: n for state, n in self._counts.items()}

    def hanging(self, now: float, threshold: float) -> list[MrfDialog]:
        return [d for d in self._dialogs.values() if d.is_hanging(now, threshold)]

    def get_timer(self) -> float | None:
        """When the next Ended dialog is due for removal, or ``None``."""
        heap = self._ended
        while heap and self._dialogs.get(heap[0][2].key) is not heap[0][2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def purge(self, now: float) -> list[MrfDialog]:
        """Remove the dialogs that ended at least ``linger`` seconds before ``now``."""
        removed: list[MrfDialog] = []
        heap = self._ended
        while heap and heap[0][0] <= now:
            _, _, dialog = heapq.heappop(heap)
            if self._dialogs.get(dialog.key) is dialog:
                self.remove(dialog.call_id, dialog.from_tag)
                removed.append(dialog)
        return removed

    handle_timer = purge

    def _state_changed(self, dialog: MrfDialog, old: MrfState, now: float) -> None:
        self._counts[old] -= 1
        self._counts[dialog.state] += 1
        if dialog.state in FINAL_STATES:
            self._bury(dialog, now)

    def _bury(self, dialog: MrfDialog, at: float) -> None:
        heapq.heappush(self._ended, (at + self.linger, next(self._seq), dialog))
