"""Table-driven dialog state machines: what the P-CSCF's and the MRF's dialogs share (paper
``004``, section V-B and Fig. 5).

A machine is a transition table ``{(state, event): new_state}`` over two enums, a start state,
a set of final states and the error an illegal pair raises. :class:`TableDialog` is one dialog
keyed by (Call-ID, From tag); a subclass names its machine with class keywords and adds its own
opaque fields (:func:`transition_table` builds a table from rows)::

    LEG_TABLE = transition_table(
        (Leg.IDLE, (LegEvent.OFFER,), Leg.UP),
        (Leg.UP, (LegEvent.HANGUP, LegEvent.TIMEOUT), Leg.DOWN))

    class LegDialog(TableDialog[Leg, LegEvent], table=LEG_TABLE, start=Leg.IDLE,
                    final_states=frozenset({Leg.DOWN}), error=LegError):
        __slots__ = ("media_port",)

``error`` is called as ``error(key, state, event)`` and must return the exception to raise (a
:class:`TransitionError`); ``event_noun`` is how the ``TypeError`` for a wrong event names the
event enum (default ``"a <EventEnum>"``). :class:`DialogTable` keeps the dialogs of one machine
(``class PcscfDialogTable(DialogTable[PcscfDialog], dialog=PcscfDialog, noun="a P-CSCF
dialog")``): lookups by key, Call-ID and tags, counts per state, hanging dialogs and removal of
final dialogs ``linger`` seconds after they got there.

The rules every machine follows: a missing pair raises (the dialog unchanged); self-loops are
legal but enter no state, so they are not in ``history``; a dialog's ``now`` never goes back;
a final state is never left, is not "hanging" and is removed from its table after the linger
time. Everything is plain data driven by the owning actor with ``now`` (its clock, on its
loop); nothing reads a clock or does I/O. These run per SIP message: dialogs have
``__slots__`` and a transition is two dict lookups by member name (an enum member's own hash is
a Python-level call, so the per-message lookups and counts go by ``_name_``, a plain string).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, TypeVar

__all__ = [
    "DEFAULT_LINGER",
    "TransitionError",
    "transition_table",
    "TableDialog",
    "DialogTable",
]

#: How long a final dialog stays in its table (seconds): RFC 3261's Timer J / 64*T1.
DEFAULT_LINGER = 32.0

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)
D = TypeVar("D", bound="TableDialog[Any, Any]")


class TransitionError(Exception):
    """No transition for ``event`` in ``state``; the dialog is unchanged.

    Attributes: ``machine`` (e.g. ``"P-CSCF"``), ``key`` (the dialog's key), ``state``,
    ``event``.
    """

    def __init__(self, machine: str, key: tuple[str, str], state: enum.Enum,
                 event: enum.Enum) -> None:
        self.machine = machine
        self.key = key
        self.state = state
        self.event = event
        super().__init__(f"{machine} dialog {key[0]!r}/{key[1]!r}: no transition from "
                         f"{state.value} on {event.name}")


def transition_table(*rows: tuple[S, tuple[E, ...], S]) -> dict[tuple[S, E], S]:
    """``{(state, event): new}`` from rows ``(state, (event, ...), new)``, in row order.

    ``ValueError`` when a (state, event) pair is given twice: a table has one row a pair.
    """
    table: dict[tuple[S, E], S] = {}
    for state, events, new in rows:
        for event in events:
            if (state, event) in table:
                raise ValueError(f"({state!r}, {event!r}) is given twice: -> "
                                 f"{table[(state, event)]!r} and -> {new!r}")
            table[(state, event)] = new
    return table


def check_key(call_id: str, from_tag: str) -> tuple[str, str]:
    """``(call_id, from_tag)``, or ``ValueError`` naming the one that is not a non-empty str."""
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"call_id must be a non-empty string, got {call_id!r}")
    if not isinstance(from_tag, str) or not from_tag:
        raise ValueError(f"from_tag must be a non-empty string, got {from_tag!r}")
    return (call_id, from_tag)


def check_instant(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------- dialog


class TableDialog(Generic[S, E]):
    """One dialog of a table-driven machine, keyed by (Call-ID, From tag); subclass it with the
    class keywords ``table``, ``start``, ``final_states``, ``error`` (and ``event_noun``).

    State: ``state``, ``history`` (a list of ``(state, at)``, one entry per state entered,
    starting with ``(start, created_at)``), ``last_event``, ``entered_by`` (the event that
    entered the current state, ``None`` in the start state). Opaque fields the owner fills in
    and reads back: ``to_tag`` (the other side's tag, used by :meth:`DialogTable.find`) and
    ``data`` (a dict for anything else); subclasses add theirs in ``__slots__``.
    """

    __slots__ = ("call_id", "from_tag", "created_at", "state", "history", "last_event",
                 "entered_by", "to_tag", "data", "_listener")

    # the machine, set on a subclass by __init_subclass__ (None: not a machine yet)
    _table: ClassVar[Mapping[tuple[Any, Any], Any]] = {}
    # the same table as {state name: {event name: new state}}, what on_event looks up
    _rows: ClassVar[dict[str, dict[str, Any]]] = {}
    _start: ClassVar[Any] = None
    _final: ClassVar[frozenset[Any]] = frozenset()
    _event_type: ClassVar[type[enum.Enum] | None] = None
    _event_noun: ClassVar[str] = ""
    _error: ClassVar[Callable[[tuple[str, str], Any, Any], Exception]]

    def __init_subclass__(cls, *, table: Mapping[tuple[S, E], S] | None = None,
                          start: S | None = None, final_states: frozenset[S] | None = None,
                          error: Callable[[tuple[str, str], S, E], Exception] | None = None,
                          event_noun: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        given = {"table": table, "start": start, "final_states": final_states, "error": error}
        if all(v is None for v in given.values()) and event_noun is None:
            return  # a subclass of a machine: inherits it
        missing = [name for name, v in given.items() if v is None]
        if missing:
            raise TypeError(f"{cls.__name__}: a TableDialog machine needs "
                            f"{', '.join(missing)} too")
        assert table is not None and start is not None and final_states is not None
        if not isinstance(start, enum.Enum):
            raise TypeError(f"{cls.__name__}: start must be an enum member, got {start!r}")
        states = type(start)
        event_types = {type(event) for _, event in table}
        if len(event_types) != 1 or not issubclass(next(iter(event_types)), enum.Enum):
            raise TypeError(f"{cls.__name__}: the table's events must be members of one enum, "
                            f"got {sorted(t.__name__ for t in event_types)}")
        for (state, event), new in table.items():
            if type(state) is not states or type(new) is not states:
                raise TypeError(f"{cls.__name__}: table row ({state!r}, {event!r}) -> {new!r} "
                                f"is not over {states.__name__}")
        if not final_states or any(type(s) is not states for s in final_states):
            raise TypeError(f"{cls.__name__}: final_states must be {states.__name__} members, "
                            f"got {final_states!r}")
        event_type = event_types.pop()
        cls._table = table
        rows: dict[str, dict[str, Any]] = {s._name_: {} for s in states}
        for (state, event), new in table.items():
            rows[state._name_][event._name_] = new
        cls._rows = rows
        cls._start = start
        cls._final = frozenset(final_states)
        cls._event_type = event_type
        cls._event_noun = event_noun if event_noun is not None else f"a {event_type.__name__}"
        cls._error = staticmethod(error)  # type: ignore[assignment]

    def __init__(self, call_id: str, from_tag: str, created_at: float) -> None:
        start = self._start
        if start is None:
            raise TypeError(f"{type(self).__name__} has no transition table: subclass "
                            f"TableDialog with table=, start=, final_states=, error=")
        # (the checks' common case, a non-empty str key and a finite float, without the calls)
        if type(call_id) is not str or not call_id or type(from_tag) is not str or not from_tag:
            check_key(call_id, from_tag)
        self.call_id = call_id
        self.from_tag = from_tag
        if type(created_at) is not float or not math.isfinite(created_at):
            created_at = check_instant("created_at", created_at)
        self.created_at = created_at
        self.state: S = start
        self.history: list[tuple[S, float]] = [(start, self.created_at)]
        self.last_event: E | None = None
        self.entered_by: E | None = None
        self.to_tag: str | None = None
        self.data: dict[str, Any] = {}
        #: called as listener(dialog, old_state, now) after every state change (the table's)
        self._listener: Callable[[Any, S, float], None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id!r}/{self.from_tag!r} {self.state.value}>"

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.from_tag)

    @property
    def entered_at(self) -> float:
        """When the current state was entered."""
        return self.history[-1][1]

    @property
    def is_final(self) -> bool:
        return self.state in self._final

    def on_event(self, event: E, now: float) -> S:
        """Apply ``event`` at ``now``; return the (possibly unchanged) state.

        Raises the machine's ``error`` (a :class:`TransitionError`; state unchanged) when the
        table has no row, ``TypeError`` for something that is not the machine's event enum,
        ``ValueError`` when ``now`` is earlier than the last state change.
        """
        if type(event) is not self._event_type:
            raise TypeError(f"event must be {self._event_noun}, got {event!r}")
        old = self.state
        new = self._rows[old._name_].get(event._name_)  # self._table[(old, event)]
        if new is None:
            raise self._error(self.key, old, event)
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
        """Stuck in a non-final state for longer than ``threshold`` seconds. The "call up"
        state counts too: pick a threshold above the calls' holding time."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not threshold >= 0:
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        return self.state not in self._final and now - self.history[-1][1] > threshold


# ----------------------------------------------------------------------------------- table


class DialogTable(Generic[D]):
    """``DialogTable(*, linger=32.0)``: the dialogs of one machine by (Call-ID, From tag);
    subclass it with the class keywords ``dialog`` (the :class:`TableDialog` subclass) and
    ``noun`` (how the duplicate-key error names a dialog, e.g. ``"a P-CSCF dialog"``).

    - :meth:`create` / :meth:`add`, :meth:`get`, :meth:`remove`, ``len``, iteration, ``in``
      (with a key tuple).
    - :meth:`find` by Call-ID and the tags of an in-dialog request in either direction;
      :meth:`by_call_id` lists every dialog of a Call-ID.
    - :meth:`counts`: dialogs per state (all states, in enum order, by value), kept
      incrementally.
    - Final dialogs are removed ``linger`` seconds after they became final: :meth:`get_timer`
      gives the next such instant (``None`` if none), :meth:`purge` (alias
      :meth:`handle_timer`) removes what is due at ``now`` and returns it.
    - :meth:`hanging`: the dialogs :meth:`TableDialog.is_hanging` says are stuck.
    """

    _dialog_type: ClassVar[type[Any] | None] = None
    _noun: ClassVar[str] = ""

    def __init_subclass__(cls, *, dialog: type[D] | None = None, noun: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if dialog is None and noun is None:
            return  # a subclass of a table: inherits its machine
        if dialog is None or noun is None:
            raise TypeError(f"{cls.__name__}: a DialogTable needs both dialog= and noun=")
        if not (isinstance(dialog, type) and issubclass(dialog, TableDialog)) \
                or dialog._start is None:
            raise TypeError(f"{cls.__name__}: dialog must be a TableDialog machine, "
                            f"got {dialog!r}")
        cls._dialog_type = dialog
        cls._noun = noun

    def __init__(self, *, linger: float = DEFAULT_LINGER) -> None:
        dialog_type = self._dialog_type
        if dialog_type is None:
            raise TypeError(f"{type(self).__name__} has no dialog type: subclass DialogTable "
                            f"with dialog=, noun=")
        if isinstance(linger, bool) or not isinstance(linger, (int, float)) \
                or not math.isfinite(linger) or linger < 0:
            raise ValueError(f"linger must be a finite number >= 0, got {linger!r}")
        self.linger = float(linger)
        self._final: frozenset[Any] = dialog_type._final
        self._final_names = frozenset(s._name_ for s in self._final)
        self._states = tuple(type(dialog_type._start))
        self._dialogs: dict[tuple[str, str], D] = {}
        self._by_call_id: dict[str, list[D]] = {}
        self._counts: dict[str, int] = {s._name_: 0 for s in self._states}  # by state name
        self._buried: list[tuple[float, int, D]] = []  # (removal instant, seq, dialog)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[D]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._dialogs

    # -- membership ------------------------------------------------------------------------

    def create(self, call_id: str, from_tag: str, now: float) -> D:
        """A new dialog in the start state. ``ValueError`` if the key is already in the
        table."""
        dialog_type: Any = self._dialog_type
        return self.add(dialog_type(call_id, from_tag, now))

    def add(self, dialog: D) -> D:
        key = (dialog.call_id, dialog.from_tag)
        if key in self._dialogs:
            raise ValueError(f"{self._noun} {dialog.call_id!r}/{dialog.from_tag!r} "
                             f"already exists")
        if dialog._listener is not None:
            raise ValueError(f"{dialog!r} already belongs to a table")
        self._dialogs[key] = dialog
        self._by_call_id.setdefault(dialog.call_id, []).append(dialog)
        name = dialog.state._name_
        self._counts[name] += 1
        dialog._listener = self._state_changed
        if name in self._final_names:  # (by name: an enum member's hash is a Python call)
            self._bury(dialog, dialog.entered_at)
        return dialog

    def get(self, call_id: str, from_tag: str) -> D | None:
        return self._dialogs.get((call_id, from_tag))

    def remove(self, call_id: str, from_tag: str) -> D | None:
        """Forget a dialog now (whatever its state); ``None`` if it is not here."""
        dialog = self._dialogs.pop((call_id, from_tag), None)
        if dialog is None:
            return None
        siblings = self._by_call_id[call_id]
        siblings.remove(dialog)
        if not siblings:
            del self._by_call_id[call_id]
        self._counts[dialog.state._name_] -= 1
        dialog._listener = None
        return dialog

    # -- lookups -----------------------------------------------------------------------------

    def find(self, call_id: str, from_tag: str | None, to_tag: str | None = None) -> D | None:
        """The dialog an in-dialog request belongs to, from the request's Call-ID, From tag
        and To tag: a request from the side that created the dialog has the dialog's From
        tag; one from the other side has it as its To tag (and the other side's tag, the
        dialog's ``to_tag``, when known, as its From tag)."""
        if from_tag is not None:
            dialog = self._dialogs.get((call_id, from_tag))
            if dialog is not None:
                return dialog
        if to_tag is not None:
            dialog = self._dialogs.get((call_id, to_tag))
            if dialog is not None and (dialog.to_tag is None or dialog.to_tag == from_tag):
                return dialog
        return None

    def by_call_id(self, call_id: str) -> list[D]:
        return list(self._by_call_id.get(call_id, ()))

    # -- statistics ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Dialogs per state, every state present, keyed by the paper's names."""
        counts = self._counts
        return {state.value: counts[state._name_] for state in self._states}

    def hanging(self, now: float, threshold: float) -> list[D]:
        return [d for d in self._dialogs.values() if d.is_hanging(now, threshold)]

    # -- removal of final dialogs (sans-IO timer) ------------------------------------------

    def get_timer(self) -> float | None:
        """When the next final dialog is due for removal, or ``None``."""
        heap = self._buried
        while heap and self._dialogs.get(heap[0][2].key) is not heap[0][2]:
            heapq.heappop(heap)  # removed by hand meanwhile
        return heap[0][0] if heap else None

    def purge(self, now: float) -> list[D]:
        """Remove the dialogs that became final at least ``linger`` s before ``now``."""
        removed: list[D] = []
        heap = self._buried
        while heap and heap[0][0] <= now:
            _, _, dialog = heapq.heappop(heap)
            if self._dialogs.get(dialog.key) is dialog:
                self.remove(dialog.call_id, dialog.from_tag)
                removed.append(dialog)
        return removed

    handle_timer = purge

    # -- internals -------------------------------------------------------------------------

    def _state_changed(self, dialog: D, old: Any, now: float) -> None:
        counts = self._counts
        new = dialog.state._name_
        counts[old._name_] -= 1
        counts[new] += 1
        if new in self._final_names:
            self._bury(dialog, now)

    def _bury(self, dialog: D, at: float) -> None:
        heapq.heappush(self._buried, (at + self.linger, next(self._seq), dialog))
