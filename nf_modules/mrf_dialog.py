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
and keeps going. The machinery (history, listener, lookups, counts, removal of Ended dialogs) is
the generic one of :mod:`nf_modules.dialog_state`; this module holds the MRF's states, events,
table, opaque media fields and :meth:`MrfDialogTable.by_call_ref`.
"""

from __future__ import annotations

import enum
from typing import Any

from nf_modules.dialog_state import (
    DEFAULT_LINGER,
    DialogTable,
    TableDialog,
    TransitionError,
    transition_table,
)

__all__ = [
    "MrfState",
    "MrfEvent",
    "MRF_TABLE",
    "FINAL_STATES",
    "MrfTransitionError",
    "MrfDialog",
    "MrfDialogTable",
    "DEFAULT_LINGER",  # from nf_modules.dialog_state: Ended dialogs linger 32 s (Timer J)
]


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


#: (state, event) -> new state; a missing pair is an illegal transition.
MRF_TABLE: dict[tuple[MrfState, MrfEvent], MrfState] = transition_table(
    (_S.START, (_E.RESERVED,), _S.CREATED),
    (_S.START, (_E.REJECTED, _E.RELEASE, _E.TIMEOUT), _S.ENDED),
    (_S.CREATED, (_E.PROGRESS,), _S.PROGRESSING),
    (_S.CREATED, (_E.ANSWER,), _S.CONNECTED),
    (_S.CREATED, (_E.ACK, _E.UPDATE), _S.CREATED),
    (_S.PROGRESSING, (_E.PROGRESS, _E.ACK, _E.UPDATE), _S.PROGRESSING),
    (_S.PROGRESSING, (_E.ANSWER,), _S.CONNECTED),
    (_S.CONNECTED, (_E.ANSWER, _E.ACK, _E.UPDATE), _S.CONNECTED),
    *[(live, (_E.RELEASE, _E.TIMEOUT), _S.ENDED)
      for live in (_S.CREATED, _S.PROGRESSING, _S.CONNECTED)],
    (_S.ENDED, (_E.RELEASE, _E.ACK, _E.TIMEOUT), _S.ENDED),
)

#: States a dialog never leaves (not "hanging", removed after the linger time).
FINAL_STATES = frozenset({MrfState.ENDED})


class MrfTransitionError(TransitionError):
    """No transition for ``event`` in ``state``; the dialog is unchanged.

    ``MrfTransitionError(key, state, event)``. Attributes: ``machine`` (``"MRF"``), ``key``
    (the dialog's key), ``state``, ``event``.
    """

    def __init__(self, key: tuple[str, str], state: MrfState, event: MrfEvent) -> None:
        super().__init__("MRF", key, state, event)


class MrfDialog(TableDialog[MrfState, MrfEvent], table=MRF_TABLE, start=MrfState.START,
                final_states=FINAL_STATES, error=MrfTransitionError, event_noun="an MrfEvent"):
    """One media session as the MRFC sees it, keyed by (Call-ID, From tag) of the AS's INVITE.

    State: ``state``, ``history`` (a list of ``(MrfState, at)``, one entry per state entered,
    starting with ``(START, created_at)``), ``last_event``, ``entered_by``. :meth:`on_event`
    raises :class:`MrfTransitionError` when :data:`MRF_TABLE` has no row; :meth:`is_hanging`
    is a non-final state (anything but Ended, Connected too) for longer than a threshold.

    Opaque media-side fields the MRFC fills in and reads back (never interpreted here):
    ``resource_ids`` (the MRFP's resource / flow ids), ``ports`` (a dict, e.g. leg name ->
    MRFP port), ``call_ref`` (the subscriber call this session serves, e.g. its Call-ID),
    ``to_tag`` (the MRFC's tag in the dialog with the AS), ``data`` (anything else).
    """

    __slots__ = ("resource_ids", "ports", "call_ref")

    def __init__(self, call_id: str, from_tag: str, created_at: float) -> None:
        super().__init__(call_id, from_tag, created_at)
        self.resource_ids: list[Any] = []
        self.ports: dict[str, Any] = {}
        self.call_ref: Any = None


class MrfDialogTable(DialogTable[MrfDialog], dialog=MrfDialog, noun="an MRF dialog"):
    """``MrfDialogTable(*, linger=32.0)``: the MRFC's dialogs by (Call-ID, From tag).

    :meth:`create` / :meth:`add`, :meth:`get`, :meth:`find` (by Call-ID and the tags of a
    request in either direction: from the AS it has the dialog's From tag; from the MRFC's
    side of the dialog the dialog's From tag is its To tag), :meth:`by_call_id`,
    :meth:`by_call_ref`, :meth:`remove`; :meth:`counts` per state (kept incrementally);
    :meth:`hanging`; Ended dialogs are removed ``linger`` seconds after they ended
    (:meth:`get_timer`, :meth:`purge` / :meth:`handle_timer`).
    """

    def by_call_ref(self, call_ref: Any) -> list[MrfDialog]:
        """The dialogs serving a subscriber call (linear scan: for queries, not per packet)."""
        return [d for d in self._dialogs.values() if d.call_ref == call_ref]
