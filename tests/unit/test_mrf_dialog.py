"""The MRF's dialog states (paper 004, Fig. 5c): table, history, hanging Connected dialogs, the
table of dialogs with counts and removal of Ended entries."""

import math

import pytest

from nf_modules.mrf_dialog import (
    FINAL_STATES,
    MRF_TABLE,
    MrfDialog,
    MrfDialogTable,
    MrfEvent as E,
    MrfState as S,
    MrfTransitionError,
)


def run(dialog, *steps):
    return [dialog.on_event(event, now) for event, now in steps]


def test_a_media_session_walks_the_paper_states_with_timestamps():
    d = MrfDialog("as-1", "as-tag", 1.0)
    assert d.state is S.START and d.history == [(S.START, 1.0)]
    assert run(d, (E.RESERVED, 1.01), (E.ACK, 1.02), (E.PROGRESS, 1.2), (E.ANSWER, 2.0),
               (E.RELEASE, 9.0)) == [S.CREATED, S.CREATED, S.PROGRESSING, S.CONNECTED,
                                     S.ENDED]
    assert d.history == [(S.START, 1.0), (S.CREATED, 1.01), (S.PROGRESSING, 1.2),
                         (S.CONNECTED, 2.0), (S.ENDED, 9.0)]
    assert d.is_final and d.entered_by is E.RELEASE


def test_final_answer_without_progress_connects_from_created():
    d = MrfDialog("as-1", "t", 0.0)
    assert run(d, (E.RESERVED, 0.0), (E.ANSWER, 0.5)) == [S.CREATED, S.CONNECTED]


@pytest.mark.parametrize("ending", [E.REJECTED, E.RELEASE, E.TIMEOUT])
def test_start_can_end_without_resources(ending):
    d = MrfDialog("as-1", "t", 0.0)
    assert d.on_event(ending, 0.1) is S.ENDED


@pytest.mark.parametrize("state_path", [[E.RESERVED], [E.RESERVED, E.PROGRESS],
                                        [E.RESERVED, E.ANSWER]])
@pytest.mark.parametrize("ending", [E.RELEASE, E.TIMEOUT])
def test_every_live_state_ends_on_release_or_timeout(state_path, ending):
    d = MrfDialog("as-1", "t", 0.0)
    run(d, *[(e, 0.0) for e in state_path])
    assert d.on_event(ending, 1.0) is S.ENDED


def test_self_loops_are_not_history():
    d = MrfDialog("as-1", "t", 0.0)
    run(d, (E.RESERVED, 0.0), (E.PROGRESS, 0.1), (E.PROGRESS, 0.2), (E.UPDATE, 0.3),
        (E.ANSWER, 0.4), (E.ANSWER, 0.5), (E.UPDATE, 0.6), (E.ACK, 0.7))
    assert [s for s, _ in d.history] == [S.START, S.CREATED, S.PROGRESSING, S.CONNECTED]
    assert d.last_event is E.ACK


def test_ended_absorbs_late_retransmissions_only():
    d = MrfDialog("as-1", "t", 0.0)
    run(d, (E.RESERVED, 0.0), (E.ANSWER, 0.1), (E.RELEASE, 1.0))
    for late in (E.RELEASE, E.ACK, E.TIMEOUT):
        assert d.on_event(late, 2.0) is S.ENDED
    for bad in (E.RESERVED, E.REJECTED, E.PROGRESS, E.ANSWER, E.UPDATE):
        with pytest.raises(MrfTransitionError, match=f"Ended on {bad.name}"):
            d.on_event(bad, 2.0)


@pytest.mark.parametrize("state,path,event", [
    (S.START, [], E.PROGRESS), (S.START, [], E.ANSWER), (S.START, [], E.ACK),
    (S.START, [], E.UPDATE),
    (S.CREATED, [E.RESERVED], E.RESERVED), (S.CREATED, [E.RESERVED], E.REJECTED),
    (S.PROGRESSING, [E.RESERVED, E.PROGRESS], E.RESERVED),
    (S.CONNECTED, [E.RESERVED, E.ANSWER], E.PROGRESS),
    (S.CONNECTED, [E.RESERVED, E.ANSWER], E.REJECTED),
])
def test_illegal_transitions_raise_naming_state_and_event(state, path, event):
    assert (state, event) not in MRF_TABLE
    d = MrfDialog("as-1", "t", 0.0)
    run(d, *[(e, 0.0) for e in path])
    assert d.state is state
    with pytest.raises(MrfTransitionError) as info:
        d.on_event(event, 1.0)
    err = info.value
    assert err.state is state and err.event is event and err.key == ("as-1", "t")
    assert err.machine == "MRF" and state.value in str(err) and event.name in str(err)
    assert d.state is state


def test_every_state_is_reachable_and_only_ended_is_final():
    reachable, frontier = {S.START}, [S.START]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in MRF_TABLE.items():
            if src is state and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == set(S)
    assert FINAL_STATES == {S.ENDED}
    for state in S:
        if state is not S.ENDED:
            assert MRF_TABLE.get((state, E.TIMEOUT)) is S.ENDED


def test_bad_arguments_are_precise_errors():
    with pytest.raises(ValueError, match="call_id"):
        MrfDialog(None, "t", 0.0)
    with pytest.raises(ValueError, match="from_tag"):
        MrfDialog("c", "", 0.0)
    with pytest.raises(ValueError, match="created_at"):
        MrfDialog("c", "t", math.inf)
    d = MrfDialog("c", "t", 3.0)
    with pytest.raises(TypeError, match="MrfEvent"):
        d.on_event("RESERVED", 3.0)
    with pytest.raises(ValueError, match="earlier"):
        d.on_event(E.RESERVED, 2.0)
    assert d.state is S.START
    with pytest.raises(ValueError, match="threshold"):
        d.is_hanging(5.0, math.nan)


def test_the_papers_hanging_connected_dialog():
    """The control plane cleared the call but the BYE never came: Connected for too long."""
    d = MrfDialog("as-1", "t", 0.0)
    run(d, (E.RESERVED, 0.0), (E.PROGRESS, 0.5), (E.ANSWER, 1.0))
    assert not d.is_hanging(31.0, 30.0)
    assert d.is_hanging(31.5, 30.0)
    d.on_event(E.RELEASE, 40.0)
    assert not d.is_hanging(1000.0, 30.0)


def test_media_fields_are_opaque_data():
    d = MrfDialog("as-1", "t", 0.0)
    assert d.resource_ids == [] and d.ports == {} and d.call_ref is None and d.data == {}
    d.resource_ids.append(17)
    d.ports["caller"] = 40000
    d.call_ref = "subscriber-call-1"
    d.data["sdp"] = b"v=0"
    assert (d.resource_ids, d.ports["caller"], d.call_ref) == ([17], 40000, "subscriber-call-1")


def test_table_counts_lookup_and_removal():
    table = MrfDialogTable(linger=10.0)
    assert table.counts() == {"Start": 0, "Created": 0, "Progressing": 0, "Connected": 0,
                              "Ended": 0}
    a = table.create("as-1", "t1", 0.0)
    b = table.create("as-2", "t2", 0.0)
    a.call_ref = b.call_ref = "call-9"
    a.to_tag = "mrfc-1"
    run(a, (E.RESERVED, 0.1), (E.ANSWER, 1.0))
    b.on_event(E.RESERVED, 0.1)
    assert table.counts() == {"Start": 0, "Created": 1, "Progressing": 0, "Connected": 1,
                              "Ended": 0}
    with pytest.raises(ValueError, match="already exists"):
        table.create("as-1", "t1", 2.0)
    assert table.find("as-1", "t1") is a
    assert table.find("as-1", "mrfc-1", "t1") is a  # a request in the other direction
    assert table.find("as-1", "x", "t1") is None
    assert table.by_call_id("as-2") == [b]
    assert table.by_call_ref("call-9") == [a, b]
    assert table.hanging(100.0, 30.0) == [a, b]
    run(a, (E.RELEASE, 5.0))
    assert table.counts()["Ended"] == 1 and table.get_timer() == 15.0
    assert table.purge(14.0) == []
    assert table.handle_timer(15.0) == [a]
    assert table.get("as-1", "t1") is None and ("as-1", "t1") not in table
    assert table.counts()["Ended"] == 0 and len(table) == 1 and list(table) == [b]
    assert table.remove("as-2", "t2") is b and table.remove("as-2", "t2") is None
    assert sum(table.counts().values()) == 0


def test_table_purge_ignores_dialogs_removed_by_hand():
    table = MrfDialogTable(linger=1.0)
    a = table.create("as-1", "t1", 0.0)
    a.on_event(E.REJECTED, 0.0)
    assert table.get_timer() == 1.0
    table.remove("as-1", "t1")
    assert table.get_timer() is None and table.purge(5.0) == []


@pytest.mark.parametrize("bad", [-0.1, math.nan, None, False])
def test_bad_linger_is_a_value_error(bad):
    with pytest.raises(ValueError, match="linger"):
        MrfDialogTable(linger=bad)
