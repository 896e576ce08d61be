"""The P-CSCF's dialog state machine (paper ``004``, section V-B and Fig. 5a), as a data table.

Through its dialogs the P-CSCF "keeps track [of] which SIP message is for which device and for
which multimedia session". A dialog is created in **Start** when an INVITE arrives from the
originating device, goes **Preparative** as the INVITE is forwarded to the S-CSCF, **Early** on a
provisional answer from the terminating device (180 Ringing), **Moratorium** on the successful
answer (200 OK; "a substate of the Confirmed state" in which the P-CSCF still waits for the
device's ACK), **Established** on the ACK, **Mortal** when the call is being cleared (BYE) and
**Morgue** when it is over. Morgue entries linger (like RFC 3261's Timer J) so late
retransmissions still find their dialog, then :class:`PcscfDialogTable` removes them.

The baseline's failure path (Fig. 4-6): when S-CSCF's Incoming Leg Control fails, the P-CSCF
retries, times out, "declares S-CSCF to be busy by generating 600 BUSY EVERYWHERE", then "acts as
a User Agent and generates SIP BYE message towards originating device and S-CSCF, and transitions
into Mortal" (event ``RELEASE``; scenario 1, a missing ACK in Moratorium, is ``TIMEOUT``); the BYE
towards the dead S-CSCF times out and the dialog goes Morgue (``TIMEOUT``), while the MRF, which
never hears the BYE, stays Connected: the hanging state the fault experiments count.

Events (:class:`PcscfEvent`) and the SIP message behind each (:func:`event_for_request` and
:func:`event_for_response` map messages to events)::

    INVITE       the initial INVITE, received from the originating device and forwarded
    PROVISIONAL  a 101-199 response to the initial INVITE carrying a To tag (100 Trying: no event)
    SUCCESS      a 2xx response to the initial INVITE (or its retransmission)
    FAILURE      a 300-699 final response to the initial INVITE, received from downstream or
                 generated here (408 after Timer B, the baseline's 600 after its retries, 487
                 after CANCEL)
    ACK          the ACK for the 2xx
    IN_DIALOG    any other in-dialog request: re-INVITE, UPDATE, PRACK, INFO, OPTIONS, ...
    BYE          a BYE from either device
    BYE_OK       the final response to the BYE (200 OK, or any other: the BYE is over)
    CANCEL       a CANCEL of the pending INVITE
    TIMEOUT      a transaction of this dialog timed out (INVITE: Timer B; BYE: Timer F), or the
                 ACK for the 2xx never came
    RELEASE      the P-CSCF clears the call itself, acting as a UA (Fig. 6: 600 + BYE)

Transition table (:data:`PCSCF_TABLE`; a row ``state --event--> state`` for every legal pair,
anything else raises :class:`DialogTransitionError`)::

    Start        --INVITE-->       Preparative   INVITE forwarded to the S-CSCF
    Preparative  --PROVISIONAL-->  Early         180 Ringing (with To tag) from the callee
    Preparative  --SUCCESS-->      Moratorium    200 OK without a provisional before it
    Preparative  --FAILURE-->      Morgue        4xx/5xx/6xx (404, 480, 486, 408, 600, ...)
    Preparative  --TIMEOUT-->      Morgue        no answer at all (Timer B)
    Preparative  --CANCEL-->       Mortal        the caller gave up; waiting for the 487
    Preparative  --RELEASE-->      Mortal        the P-CSCF clears the call (600 + CANCEL/BYE)
    Early        --PROVISIONAL-->  Early         more 18x
    Early        --SUCCESS-->      Moratorium    200 OK
    Early        --FAILURE-->      Morgue        486 Busy, 487 after CANCEL, 480, ...
    Early        --TIMEOUT-->      Morgue        the INVITE timed out
    Early        --CANCEL-->       Mortal        waiting for the 487
    Early        --BYE-->          Mortal        the caller ends an early dialog (RFC 3261 15)
    Early        --RELEASE-->      Mortal
    Early        --IN_DIALOG-->    Early         PRACK, UPDATE on an early dialog
    Moratorium   --ACK-->          Established   the device acknowledged the 200
    Moratorium   --SUCCESS-->      Moratorium    2xx retransmission (the ACK is late or lost)
    Moratorium   --BYE-->          Mortal        a BYE that overtook its ACK
    Moratorium   --TIMEOUT-->      Mortal        no ACK (scenario 1): the P-CSCF sends BYE
    Moratorium   --RELEASE-->      Mortal
    Moratorium   --IN_DIALOG-->    Moratorium
    Established  --BYE-->          Mortal        either party hangs up
    Established  --RELEASE-->      Mortal        scenario 2 (Fig. 6): 600 + BYE from the P-CSCF
    Established  --TIMEOUT-->      Mortal        an in-dialog transaction timed out: clear it
    Established  --ACK-->          Established   ACK retransmission, ACK of a re-INVITE
    Established  --SUCCESS-->      Established   2xx retransmission
    Established  --IN_DIALOG-->    Established   re-INVITE, UPDATE, INFO, ...
    Mortal       --BYE_OK-->       Morgue        200 (or any final response) to the BYE
    Mortal       --FAILURE-->      Morgue        487 Request Terminated after CANCEL
    Mortal       --TIMEOUT-->      Morgue        the BYE (or the cancelled INVITE) timed out
    Mortal       --BYE, ACK, SUCCESS, PROVISIONAL, CANCEL, RELEASE--> Mortal
                                                 retransmissions and messages that crossed
                                                 the release (a 200 racing a CANCEL, ...)
    Morgue       --every event but INVITE and IN_DIALOG--> Morgue   late retransmissions

``IN_DIALOG`` in Mortal or Morgue is illegal ("thereafter, any modification to the dialogue is
not allowed", Fig. 6), and so is any event in Start but ``INVITE``. A CANCEL goes to Mortal, not
straight to Morgue, because a 200 can cross it: the call is then set up and cleared with a BYE,
and the dialog must still route that ACK and BYE. Self-loops are legal but not recorded in the
history (no state is entered).

Everything here is plain data driven by the owner with ``now`` (the P-CSCF actor's clock, on its
loop); nothing reads a clock or does I/O. The P-CSCF actor catches :class:`DialogTransitionError`,
counts it and keeps going. The machinery (history, listener, lookups, counts, Morgue removal) is
the generic one of :mod:`nf_modules.dialog_state`; this module holds the P-CSCF's states, events,
table, SIP mapping and opaque fields.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from nf_modules.dialog_state import (
    DEFAULT_LINGER,
    DialogTable,
    TableDialog,
    TransitionError,
    transition_table,
)

__all__ = [
    "PcscfState",
    "PcscfEvent",
    "PCSCF_TABLE",
    "FINAL_STATES",
    "DialogTransitionError",
    "PcscfDialog",
    "PcscfDialogTable",
    "event_for_request",
    "event_for_response",
    "DEFAULT_LINGER",  # from nf_modules.dialog_state: Morgue dialogs linger 32 s (Timer J)
]


class PcscfState(enum.Enum):
    """The states of Fig. 5a; the values are the paper's names (the keys of ``counts()``)."""

    START = "Start"
    PREPARATIVE = "Preparative"
    EARLY = "Early"
    MORATORIUM = "Moratorium"
    ESTABLISHED = "Established"
    MORTAL = "Mortal"
    MORGUE = "Morgue"


class PcscfEvent(enum.Enum):
    INVITE = "initial INVITE forwarded"
    PROVISIONAL = "101-199 response to the initial INVITE with a To tag"
    SUCCESS = "2xx response to the initial INVITE"
    FAILURE = "300-699 final response to the initial INVITE"
    ACK = "ACK for the 2xx"
    IN_DIALOG = "other in-dialog request (re-INVITE, UPDATE, PRACK, INFO, ...)"
    BYE = "BYE"
    BYE_OK = "final response to the BYE"
    CANCEL = "CANCEL of the pending INVITE"
    TIMEOUT = "a transaction of the dialog timed out, or the ACK never came"
    RELEASE = "the P-CSCF clears the call as a UA (600 + BYE)"


_S = PcscfState
_E = PcscfEvent


#: (state, event) -> new state; a missing pair is an illegal transition.
PCSCF_TABLE: dict[tuple[PcscfState, PcscfEvent], PcscfState] = transition_table(
    (_S.START, (_E.INVITE,), _S.PREPARATIVE),

    (_S.PREPARATIVE, (_E.PROVISIONAL,), _S.EARLY),
    (_S.PREPARATIVE, (_E.SUCCESS,), _S.MORATORIUM),
    (_S.PREPARATIVE, (_E.FAILURE, _E.TIMEOUT), _S.MORGUE),
    (_S.PREPARATIVE, (_E.CANCEL, _E.RELEASE), _S.MORTAL),

    (_S.EARLY, (_E.PROVISIONAL, _E.IN_DIALOG), _S.EARLY),
    (_S.EARLY, (_E.SUCCESS,), _S.MORATORIUM),
    (_S.EARLY, (_E.FAILURE, _E.TIMEOUT), _S.MORGUE),
    (_S.EARLY, (_E.CANCEL, _E.BYE, _E.RELEASE), _S.MORTAL),

    (_S.MORATORIUM, (_E.ACK,), _S.ESTABLISHED),
    (_S.MORATORIUM, (_E.SUCCESS, _E.IN_DIALOG), _S.MORATORIUM),
    (_S.MORATORIUM, (_E.BYE, _E.TIMEOUT, _E.RELEASE), _S.MORTAL),

    (_S.ESTABLISHED, (_E.ACK, _E.SUCCESS, _E.IN_DIALOG), _S.ESTABLISHED),
    (_S.ESTABLISHED, (_E.BYE, _E.TIMEOUT, _E.RELEASE), _S.MORTAL),

    (_S.MORTAL, (_E.BYE_OK, _E.FAILURE, _E.TIMEOUT), _S.MORGUE),
    (_S.MORTAL, (_E.BYE, _E.ACK, _E.SUCCESS, _E.PROVISIONAL, _E.CANCEL, _E.RELEASE), _S.MORTAL),

    (_S.MORGUE, tuple(e for e in _E if e not in (_E.INVITE, _E.IN_DIALOG)), _S.MORGUE),
)

#: States a dialog never leaves (not "hanging", removed after the linger time).
FINAL_STATES = frozenset({PcscfState.MORGUE})


class DialogTransitionError(TransitionError):
    """No transition for ``event`` in ``state``; the dialog is unchanged.

    ``DialogTransitionError(machine, key, state, event)``. Attributes: ``machine``
    (``"P-CSCF"``), ``key`` (the dialog's key), ``state``, ``event``.
    """


# ---------------------------------------------------------------------------- SIP -> events


def event_for_request(method: str, *, in_dialog: bool) -> PcscfEvent:
    """The event a request of a call brings. ``in_dialog``: the request has a To tag (an
    INVITE with one is a re-INVITE). Out-of-dialog requests other than INVITE (REGISTER, ...)
    are no dialog's business and must not be fed to a dialog."""
    m = method.upper()
    if m == "INVITE":
        return _E.IN_DIALOG if in_dialog else _E.INVITE
    if m == "ACK":
        return _E.ACK
    if m == "BYE":
        return _E.BYE
    if m == "CANCEL":
        return _E.CANCEL
    return _E.IN_DIALOG


def event_for_response(status: int, method: str, *, has_to_tag: bool,
                       initial_invite: bool = True) -> PcscfEvent | None:
    """The event a response brings, or ``None`` when it moves no dialog state.

    ``method`` is the CSeq method; ``initial_invite`` says an INVITE response answers the
    dialog-creating INVITE (``False`` for a re-INVITE, whose responses change nothing). 100
    Trying and provisional responses without a To tag create no dialog: ``None``. Responses to
    CANCEL are ``None`` too (the INVITE's 487 carries the outcome), and so are responses to
    other in-dialog requests.
    """
    if type(status) is not int and (isinstance(status, bool) or not isinstance(status, int)) \
            or not 100 <= status <= 699:  # (type() first: a plain int, the common case, skips the rest)
        raise ValueError(f"status must be an int in 100..699, got {status!r}")
    m = method.upper()
    if m == "INVITE" and initial_invite:
        if status < 200:
            return _E.PROVISIONAL if status > 100 and has_to_tag else None
        return _E.SUCCESS if status < 300 else _E.FAILURE
    if m == "BYE" and status >= 200:
        return _E.BYE_OK
    return None


# ---------------------------------------------------------------------------------- dialog


class PcscfDialog(TableDialog[PcscfState, PcscfEvent], table=PCSCF_TABLE,
                  start=PcscfState.START, final_states=FINAL_STATES,
                  error=functools.partial(DialogTransitionError, "P-CSCF"),
                  event_noun="a PcscfEvent"):
    """One call as the P-CSCF sees it, keyed by (Call-ID, From tag of the initial INVITE).

    State: ``state``, ``history`` (a list of ``(PcscfState, at)``, one entry per state entered,
    starting with ``(START, created_at)``), ``last_event``, ``entered_by`` (the event that
    entered the current state, ``None`` in Start). :meth:`on_event` raises
    :class:`DialogTransitionError` when :data:`PCSCF_TABLE` has no row; :meth:`is_hanging` is
    a non-final state (anything but Morgue, Established too) for longer than a threshold.

    Opaque fields the P-CSCF fills in and reads back (never interpreted here): ``to_tag`` (the
    callee's tag once a response carried it), ``route_set`` (the Route values for in-dialog
    requests from the caller, learned from the 2xx's Record-Route), ``next_hop`` (where those
    requests go), ``caller_address`` (where requests towards the caller go), ``data`` (a dict
    for anything else).
    """

    __slots__ = ("route_set", "next_hop", "caller_address")

    def __init__(self, call_id: str, from_tag: str, created_at: float) -> None:
        super().__init__(call_id, from_tag, created_at)
        self.route_set: Any = None
        self.next_hop: Any = None
        self.caller_address: Any = None

    def is_from_caller(self, from_tag: str) -> bool:
        """An in-dialog request with this From tag comes from the caller (else the callee)."""
        return from_tag == self.from_tag


# ----------------------------------------------------------------------------------- table


class PcscfDialogTable(DialogTable[PcscfDialog], dialog=PcscfDialog, noun="a P-CSCF dialog"):
    """``PcscfDialogTable(*, linger=32.0)``: the P-CSCF's dialogs by (Call-ID, From tag).

    - :meth:`create` / :meth:`add`, :meth:`get`, :meth:`remove`, ``len``, iteration, ``in``
      (with a key tuple).
    - :meth:`find` for in-dialog requests routed by dialog state (SIPp's stock uac sends ACK
      and BYE to the P-CSCF's address without Route headers): by Call-ID and the tags in
      either direction (:meth:`PcscfDialog.is_from_caller` tells the direction).
      :meth:`by_call_id` lists every dialog of a Call-ID.
    - :meth:`counts`: dialogs per state (all states, the paper's names), kept incrementally.
    - Morgue dialogs are removed ``linger`` seconds after they entered Morgue:
      :meth:`get_timer` gives the next such instant (``None`` if none), :meth:`purge` (alias
      :meth:`handle_timer`) removes what is due at ``now`` and returns it.
    - :meth:`hanging`: the dialogs :meth:`PcscfDialog.is_hanging` says are stuck.
    """
