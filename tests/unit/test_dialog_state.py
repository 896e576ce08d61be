"""The generic table-driven dialog machinery (nf_modules.dialog_state) on a toy machine: table
building, the subclass keywords and their checks, slots, errors and the generic table."""

import enum

import pytest

from nf_modules.dialog_state import (
    DEFAULT_LINGER,
    DialogTable,
    TableDialog,
    TransitionError,
    transition_table,
)
from nf_modules.mrf_dialog import MrfDialog, MrfTransitionError
from nf_modules.pcscf_dialog import DialogTransitionError, PcscfDialog


class Leg(enum.Enum):
    IDLE = "Idle"
    UP = "Up"
    DOWN = "Down"


class LegEvent(enum.Enum):
    OFFER = "offer"
    REFRESH = "refresh"
    HANGUP = "hangup"


class Other(enum.Enum):
    X = "x"


class LegError(TransitionError):
    def __init__(self, key, state, event):
        super().__init__("Leg", key, state, event)


LEG_TABLE = transition_table(
    (Leg.IDLE, (LegEvent.OFFER,), Leg.UP),
    (Leg.UP, (LegEvent.REFRESH,), Leg.UP),
    (Leg.UP, (LegEvent.HANGUP,), Leg.DOWN),
    (Leg.DOWN, (LegEvent.HANGUP,), Leg.DOWN),
)


class LegDialog(TableDialog[Leg, LegEvent], table=LEG_TABLE, start=Leg.IDLE,
                final_states=frozenset({Leg.DOWN}), error=LegError):
    __slots__ = ("media_port",)

    def __init__(self, call_id, from_tag, created_at):
        super().__init__(call_id, from_tag, created_at)
        self.media_port = None


class LegTable(DialogTable[LegDialog], dialog=LegDialog, noun="a leg"):
    pass


def test_transition_table_keeps_row_order_and_refuses_a_pair_twice():
    assert list(LEG_TABLE.items()) == [
        ((Leg.IDLE, LegEvent.OFFER), Leg.UP), ((Leg.UP, LegEvent.REFRESH), Leg.UP),
        ((Leg.UP, LegEvent.HANGUP), Leg.DOWN), ((Leg.DOWN, LegEvent.HANGUP), Leg.DOWN)]
    with pytest.raises(ValueError, match="given twice"):
        transition_table((Leg.UP, (LegEvent.HANGUP,), Leg.DOWN),
                         (Leg.UP, (LegEvent.REFRESH, LegEvent.HANGUP), Leg.UP))


def test_a_toy_machine_gets_history_self_loops_errors_and_hanging():
    d = LegDialog("c1", "t1", 1.0)
    assert repr(d) == "<LegDialog 'c1'/'t1' Idle>" and d.key == ("c1", "t1")
    assert [d.on_event(e, now) for e, now in [(LegEvent.OFFER, 2.0), (LegEvent.REFRESH, 3.0)]] \
        == [Leg.UP, Leg.UP]
    assert d.history == [(Leg.IDLE, 1.0), (Leg.UP, 2.0)] and d.last_event is LegEvent.REFRESH
    assert d.is_hanging(4.5, 2.0) and not d.is_hanging(4.0, 2.0) and d.time_in_state(4.0) == 2.0
    with pytest.raises(LegError, match="^Leg dialog 'c1'/'t1': no transition from Up on OFFER$"):
        d.on_event(LegEvent.OFFER, 5.0)
    with pytest.raises(TypeError, match="^event must be a LegEvent, got <Other.X: 'x'>$"):
        d.on_event(Other.X, 5.0)
    assert d.on_event(LegEvent.HANGUP, 6.0) is Leg.DOWN
    assert d.is_final and not d.is_hanging(100.0, 1.0) and d.entered_by is LegEvent.HANGUP


def test_dialogs_have_slots_only():
    for d in (LegDialog("c", "t", 0.0), PcscfDialog("c", "t", 0.0), MrfDialog("c", "t", 0.0)):
        assert not hasattr(d, "__dict__")
        with pytest.raises(AttributeError):
            d.not_a_field = 1
    assert LegDialog("c", "t", 0.0).media_port is None


def test_the_two_papers_errors_share_a_base_but_not_each_other():
    assert issubclass(DialogTransitionError, TransitionError)
    assert issubclass(MrfTransitionError, TransitionError)
    assert not issubclass(MrfTransitionError, DialogTransitionError)
    assert not issubclass(DialogTransitionError, MrfTransitionError)


def test_a_subclass_of_a_machine_inherits_it():
    class Tagged(LegDialog):
        __slots__ = ("tag",)

    d = Tagged("c", "t", 0.0)
    assert d.on_event(LegEvent.OFFER, 0.0) is Leg.UP and repr(d) == "<Tagged 'c'/'t' Up>"


@pytest.mark.parametrize("kwargs,message", [
    (dict(table=LEG_TABLE, start=Leg.IDLE), "final_states, error"),
    (dict(event_noun="a LegEvent"), "table, start, final_states, error"),
    (dict(table=LEG_TABLE, start="Idle", final_states={Leg.DOWN}, error=LegError),
     "start must be an enum member"),
    (dict(table={**LEG_TABLE, (Leg.UP, Other.X): Leg.DOWN}, start=Leg.IDLE,
          final_states={Leg.DOWN}, error=LegError), "members of one enum"),
    (dict(table={**LEG_TABLE, (Leg.UP, LegEvent.OFFER): Other.X}, start=Leg.IDLE,
          final_states={Leg.DOWN}, error=LegError), "is not over Leg"),
    (dict(table=LEG_TABLE, start=Leg.IDLE, final_states={Other.X}, error=LegError),
     "final_states must be Leg members"),
])
def test_bad_machine_keywords_are_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        type("Bad", (TableDialog,), {"__slots__": ()}, **kwargs)


def test_the_generic_bases_alone_refuse_to_run():
    with pytest.raises(TypeError, match="no transition table"):
        TableDialog("c", "t", 0.0)
    with pytest.raises(TypeError, match="no dialog type"):
        DialogTable()
    with pytest.raises(TypeError, match="both dialog= and noun="):
        type("Bad", (DialogTable,), {}, dialog=LegDialog)
    with pytest.raises(TypeError, match="must be a TableDialog machine"):
        type("Bad", (DialogTable,), {}, dialog=TableDialog, noun="a bad")


def test_the_generic_table_counts_finds_and_removes_final_dialogs():
    table = LegTable(linger=2.0)
    assert LegTable().linger == DEFAULT_LINGER == 32.0
    assert table.counts() == {"Idle": 0, "Up": 0, "Down": 0}
    a = table.create("c1", "t1", 0.0)
    b = table.create("c1", "t2", 0.0)
    assert isinstance(a, LegDialog) and table.by_call_id("c1") == [a, b]
    with pytest.raises(ValueError, match="^a leg 'c1'/'t1' already exists$"):
        table.create("c1", "t1", 0.0)
    a.on_event(LegEvent.OFFER, 1.0)
    a.to_tag = "far"
    assert table.find("c1", "far", "t1") is a and table.find("c1", "near", "t1") is None
    a.on_event(LegEvent.HANGUP, 3.0)
    assert table.counts() == {"Idle": 1, "Up": 0, "Down": 1} and table.get_timer() == 5.0
    assert table.hanging(10.0, 1.0) == [b]
    assert table.purge(4.9) == [] and table.handle_timer(5.0) == [a]
    assert list(table) == [b] and ("c1", "t1") not in table and table.get_timer() is None
