"""The P-CSCF's dialog states (paper 004, Fig. 5a): table, history, hanging dialogs, the table
of dialogs with counts, lookups and Morgue removal."""

import math

import pytest

from nf_modules.pcscf_dialog import (
    DEFAULT_LINGER,
    FINAL_STATES,
    PCSCF_TABLE,
    DialogTransitionError,
    PcscfDialog,
    PcscfDialogTable,
    PcscfEvent as E,
    PcscfState as S,
    event_for_request,
    event_for_response,
)


def run(dialog, *steps):
    """Apply (event, now) pairs; return the states after each."""
    return [dialog.on_event(event, now) for event, now in steps]


# ------------------------------------------------------------------------------- flows


def test_a_normal_call_walks_the_paper_states_with_timestamps():
    d = PcscfDialog("c1", "a1", 10.0)
    assert d.state is S.START and d.history == [(S.START, 10.0)]
    assert run(d, (E.INVITE, 10.0), (E.PROVISIONAL, 10.2), (E.SUCCESS, 11.0), (E.ACK, 11.1),
               (E.BYE, 20.0), (E.BYE_OK, 20.05)) == [
        S.PREPARATIVE, S.EARLY, S.MORATORIUM, S.ESTABLISHED, S.MORTAL, S.MORGUE]
    assert d.history == [(S.START, 10.0), (S.PREPARATIVE, 10.0), (S.EARLY, 10.2),
                         (S.MORATORIUM, 11.0), (S.ESTABLISHED, 11.1), (S.MORTAL, 20.0),
                         (S.MORGUE, 20.05)]
    assert d.is_final and d.entered_by is E.BYE_OK and d.entered_at == 20.05


def test_answer_without_ringing_goes_straight_to_moratorium():
    d = PcscfDialog("c1", "a1", 0.0)
    assert run(d, (E.INVITE, 0.0), (E.SUCCESS, 0.1)) == [S.PREPARATIVE, S.MORATORIUM]


@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("ending", [E.FAILURE, E.TIMEOUT])
def test_an_unanswered_or_rejected_invite_goes_to_morgue(early, ending):
    d = PcscfDialog("c1", "a1", 0.0)
    d.on_event(E.INVITE, 0.0)
    if early:
        d.on_event(E.PROVISIONAL, 0.1)
    assert d.on_event(ending, 32.0) is S.MORGUE


def test_cancel_goes_mortal_then_morgue_on_the_487():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.PROVISIONAL, 0.1))
    assert d.on_event(E.CANCEL, 1.0) is S.MORTAL
    assert d.on_event(E.FAILURE, 1.01) is S.MORGUE  # 487 Request Terminated
    assert [s for s, _ in d.history] == [S.START, S.PREPARATIVE, S.EARLY, S.MORTAL, S.MORGUE]


def test_a_200_crossing_a_cancel_keeps_the_dialog_mortal_until_the_bye_completes():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.PROVISIONAL, 0.1), (E.CANCEL, 1.0))
    assert run(d, (E.SUCCESS, 1.01), (E.ACK, 1.02), (E.BYE, 1.03)) == [S.MORTAL] * 3
    assert d.on_event(E.BYE_OK, 1.05) is S.MORGUE


def test_scenario_1_no_ack_in_moratorium_then_the_bye_times_out():
    """Fig. 5: the ACK never comes, the P-CSCF sends BYE (Mortal), which dies at S-CSCF."""
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.PROVISIONAL, 0.1), (E.SUCCESS, 0.2))
    assert d.on_event(E.TIMEOUT, 32.2) is S.MORTAL
    assert d.on_event(E.TIMEOUT, 64.2) is S.MORGUE


def test_scenario_2_baseline_600_and_bye_from_established():
    """Fig. 6: established call, the P-CSCF answers 600, sends BYE as a UA, goes Mortal."""
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.SUCCESS, 0.2), (E.ACK, 0.3))
    assert d.on_event(E.RELEASE, 30.0) is S.MORTAL
    assert d.entered_by is E.RELEASE
    # the caller's 200 to our BYE is the end of it
    assert d.on_event(E.BYE_OK, 30.1) is S.MORGUE


def test_fig_6_no_modification_after_the_release():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.SUCCESS, 0.2), (E.ACK, 0.3), (E.RELEASE, 30.0))
    with pytest.raises(DialogTransitionError):
        d.on_event(E.IN_DIALOG, 30.5)  # a re-INVITE


def test_in_dialog_requests_and_retransmissions_do_not_change_state_or_history():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.SUCCESS, 0.2), (E.SUCCESS, 0.7), (E.ACK, 0.8))
    before = list(d.history)
    assert run(d, (E.IN_DIALOG, 5.0), (E.ACK, 5.1), (E.SUCCESS, 5.2)) == [S.ESTABLISHED] * 3
    assert d.history == before and d.last_event is E.SUCCESS and d.entered_by is E.ACK


def test_morgue_absorbs_late_retransmissions_but_not_modifications():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.SUCCESS, 0.1), (E.ACK, 0.2), (E.BYE, 1.0), (E.BYE_OK, 1.1))
    for late in (E.BYE, E.BYE_OK, E.ACK, E.SUCCESS, E.FAILURE, E.TIMEOUT, E.CANCEL, E.RELEASE,
                 E.PROVISIONAL):
        assert d.on_event(late, 2.0) is S.MORGUE
    assert len(d.history) == 6
    for bad in (E.INVITE, E.IN_DIALOG):
        with pytest.raises(DialogTransitionError):
            d.on_event(bad, 2.0)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("event", [e for e in E if e is not E.INVITE])
def test_start_accepts_only_the_invite(event):
    d = PcscfDialog("c1", "a1", 0.0)
    with pytest.raises(DialogTransitionError) as info:
        d.on_event(event, 0.0)
    err = info.value
    assert err.state is S.START and err.event is event and err.key == ("c1", "a1")
    assert "Start" in str(err) and event.name in str(err) and "P-CSCF" in str(err)
    assert d.state is S.START and d.history == [(S.START, 0.0)] and d.last_event is None


@pytest.mark.parametrize("state,event", [
    (S.PREPARATIVE, E.INVITE), (S.PREPARATIVE, E.ACK), (S.PREPARATIVE, E.BYE),
    (S.PREPARATIVE, E.BYE_OK), (S.PREPARATIVE, E.IN_DIALOG),
    (S.EARLY, E.ACK), (S.EARLY, E.BYE_OK),
    (S.MORATORIUM, E.FAILURE), (S.MORATORIUM, E.CANCEL), (S.MORATORIUM, E.PROVISIONAL),
    (S.ESTABLISHED, E.INVITE), (S.ESTABLISHED, E.FAILURE), (S.ESTABLISHED, E.CANCEL),
    (S.ESTABLISHED, E.BYE_OK),
    (S.MORTAL, E.INVITE), (S.MORTAL, E.IN_DIALOG),
])
def test_illegal_transitions_raise_naming_state_and_event(state, event):
    assert (state, event) not in PCSCF_TABLE
    d = PcscfDialog("c9", "t9", 0.0)
    path = {S.PREPARATIVE: [E.INVITE], S.EARLY: [E.INVITE, E.PROVISIONAL],
            S.MORATORIUM: [E.INVITE, E.SUCCESS], S.ESTABLISHED: [E.INVITE, E.SUCCESS, E.ACK],
            S.MORTAL: [E.INVITE, E.SUCCESS, E.ACK, E.BYE]}[state]
    for e in path:
        d.on_event(e, 1.0)
    assert d.state is state
    with pytest.raises(DialogTransitionError, match=f"{state.value} on {event.name}"):
        d.on_event(event, 2.0)
    assert d.state is state


def test_every_state_is_reachable_and_only_morgue_is_final():
    reachable = {S.START}
    frontier = [S.START]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in PCSCF_TABLE.items():
            if src is state and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == set(S)
    assert FINAL_STATES == {S.MORGUE}
    assert all(dst is S.MORGUE for (src, _), dst in PCSCF_TABLE.items() if src is S.MORGUE)
    # every non-final state has a way towards Morgue
    for state in S:
        if state is not S.MORGUE:
            assert any(src is state and dst is not state for (src, _), dst in PCSCF_TABLE.items())


def test_bad_arguments_are_precise_errors():
    with pytest.raises(ValueError, match="call_id"):
        PcscfDialog("", "a1", 0.0)
    with pytest.raises(ValueError, match="from_tag"):
        PcscfDialog("c1", None, 0.0)
    with pytest.raises(ValueError, match="created_at"):
        PcscfDialog("c1", "a1", math.nan)
    d = PcscfDialog("c1", "a1", 5.0)
    with pytest.raises(TypeError, match="PcscfEvent"):
        d.on_event("INVITE", 5.0)
    with pytest.raises(ValueError, match="earlier"):
        d.on_event(E.INVITE, 4.0)
    assert d.state is S.START
    with pytest.raises(ValueError, match="threshold"):
        d.is_hanging(6.0, -1)


# ------------------------------------------------------------------------------- hanging


def test_is_hanging_means_longer_than_threshold_in_a_non_final_state():
    d = PcscfDialog("c1", "a1", 0.0)
    run(d, (E.INVITE, 0.0), (E.SUCCESS, 1.0))  # Moratorium since 1.0
    assert not d.is_hanging(5.0, 4.0)  # exactly 4 s: not longer
    assert d.is_hanging(5.001, 4.0)
    assert d.time_in_state(5.0) == 4.0
    run(d, (E.ACK, 6.0), (E.RELEASE, 7.0))
    assert d.is_hanging(100.0, 10.0)  # stuck in Mortal: the BYE never completed
    d.on_event(E.TIMEOUT, 100.0)
    assert not d.is_hanging(1000.0, 10.0)


# ------------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("method,in_dialog,event", [
    ("INVITE", False, E.INVITE), ("INVITE", True, E.IN_DIALOG), ("ack", True, E.ACK),
    ("BYE", True, E.BYE), ("CANCEL", False, E.CANCEL), ("UPDATE", True, E.IN_DIALOG),
    ("PRACK", True, E.IN_DIALOG), ("INFO", True, E.IN_DIALOG),
])
def test_event_for_request(method, in_dialog, event):
    assert event_for_request(method, in_dialog=in_dialog) is event


@pytest.mark.parametrize("status,method,to_tag,initial,event", [
    (100, "INVITE", False, True, None),
    (100, "INVITE", True, True, None),
    (180, "INVITE", True, True, E.PROVISIONAL),
    (183, "INVITE", True, True, E.PROVISIONAL),
    (180, "INVITE", False, True, None),
    (200, "INVITE", True, True, E.SUCCESS),
    (202, "INVITE", True, True, E.SUCCESS),
    (486, "INVITE", True, True, E.FAILURE),
    (487, "INVITE", True, True, E.FAILURE),
    (600, "INVITE", True, True, E.FAILURE),
    (200, "INVITE", True, False, None),  # re-INVITE
    (488, "INVITE", True, False, None),
    (200, "BYE", True, True, E.BYE_OK),
    (481, "BYE", True, True, E.BYE_OK),
    (100, "BYE", False, True, None),
    (200, "CANCEL", True, True, None),
    (200, "UPDATE", True, True, None),
])
def test_event_for_response(status, method, to_tag, initial, event):
    assert event_for_response(status, method, has_to_tag=to_tag,
                              initial_invite=initial) is event


@pytest.mark.parametrize("bad", [99, 700, True, "200", None])
def test_event_for_response_rejects_bad_status(bad):
    with pytest.raises(ValueError, match="status"):
        event_for_response(bad, "INVITE", has_to_tag=True)


# ------------------------------------------------------------------------------- table


def test_table_counts_follow_every_transition():
    table = PcscfDialogTable()
    assert table.counts() == {s.value: 0 for s in S}
    a = table.create("c1", "a1", 0.0)
    b = table.create("c2", "b1", 0.0)
    assert table.counts()["Start"] == 2
    a.on_event(E.INVITE, 0.0)
    b.on_event(E.INVITE, 0.0)
    b.on_event(E.PROVISIONAL, 0.1)
    counts = table.counts()
    assert counts["Preparative"] == 1 and counts["Early"] == 1 and counts["Start"] == 0
    assert list(counts) == ["Start", "Preparative", "Early", "Moratorium", "Established",
                            "Mortal", "Morgue"]
    b.on_event(E.PROVISIONAL, 0.2)  # self-loop
    assert table.counts()["Early"] == 1
    with pytest.raises(DialogTransitionError):
        a.on_event(E.ACK, 0.3)
    assert table.counts()["Preparative"] == 1
    assert sum(table.counts().values()) == len(table) == 2


def test_table_create_duplicate_and_remove():
    table = PcscfDialogTable()
    d = table.create("c1", "a1", 0.0)
    with pytest.raises(ValueError, match="already exists"):
        table.create("c1", "a1", 1.0)
    assert ("c1", "a1") in table and table.get("c1", "a1") is d
    assert list(table) == [d]
    assert table.remove("c1", "a1") is d
    assert table.remove("c1", "a1") is None
    assert len(table) == 0 and table.counts()["Start"] == 0 and table.by_call_id("c1") == []
    d.on_event(E.INVITE, 1.0)  # a removed dialog no longer touches the table's counts
    assert table.counts()["Preparative"] == 0
    with pytest.raises(ValueError, match="already belongs"):
        other = PcscfDialogTable()
        other.add(d)
        table.add(d)


def test_find_routes_in_dialog_requests_in_both_directions():
    """SIPp's stock uac sends ACK and BYE to the P-CSCF without Route: find them by Call-ID
    and tags, and keep the route learned for the dialog."""
    table = PcscfDialogTable()
    d = table.create("call-7", "caller-tag", 0.0)
    d.on_event(E.INVITE, 0.0)
    d.to_tag = "callee-tag"
    d.route_set = ["<sip:scscf.ims.example;lr>"]
    d.next_hop = ("127.0.0.1", 5070)
    d.caller_address = ("127.0.0.1", 5061)
    # ACK / BYE from the caller: From tag = the dialog's From tag
    found = table.find("call-7", "caller-tag", "callee-tag")
    assert found is d and found.is_from_caller("caller-tag")
    assert found.route_set == ["<sip:scscf.ims.example;lr>"]
    assert found.next_hop == ("127.0.0.1", 5070)
    # BYE from the callee: From tag = the callee's tag, To tag = the caller's
    back = table.find("call-7", "callee-tag", "caller-tag")
    assert back is d and not back.is_from_caller("callee-tag")
    # a stranger with the right Call-ID but wrong tags finds nothing
    assert table.find("call-7", "other", "caller-tag") is None
    assert table.find("call-7", "other", "nope") is None
    assert table.find("call-8", "caller-tag") is None
    assert table.by_call_id("call-7") == [d]


def test_find_by_to_tag_before_the_callee_tag_is_known():
    table = PcscfDialogTable()
    d = table.create("c1", "a1", 0.0)
    assert table.find("c1", "whatever", "a1") is d


def test_by_call_id_lists_every_dialog_of_a_call_id():
    table = PcscfDialogTable()
    a = table.create("c1", "a1", 0.0)
    b = table.create("c1", "a2", 0.0)
    table.create("c2", "a1", 0.0)
    assert table.by_call_id("c1") == [a, b]
    table.remove("c1", "a1")
    assert table.by_call_id("c1") == [b]


def test_morgue_entries_are_removed_after_the_linger_time():
    table = PcscfDialogTable(linger=32.0)
    assert table.linger == 32.0 and DEFAULT_LINGER == 32.0
    assert table.get_timer() is None
    a = table.create("c1", "a1", 0.0)
    b = table.create("c2", "b1", 0.0)
    live = table.create("c3", "l1", 0.0)
    run(a, (E.INVITE, 0.0), (E.FAILURE, 1.0))  # Morgue at 1.0
    run(b, (E.INVITE, 0.0), (E.TIMEOUT, 5.0))  # Morgue at 5.0
    live.on_event(E.INVITE, 0.0)
    assert table.get_timer() == 33.0
    assert table.purge(32.999) == []
    assert table.purge(33.0) == [a]
    assert table.get("c1", "a1") is None and table.get_timer() == 37.0
    assert table.counts()["Morgue"] == 1
    # late retransmissions in Morgue do not postpone the removal
    b.on_event(E.FAILURE, 20.0)
    assert table.handle_timer(40.0) == [b]
    assert table.get_timer() is None
    assert list(table) == [live] and table.counts()["Morgue"] == 0


def test_purge_skips_dialogs_removed_by_hand():
    table = PcscfDialogTable(linger=1.0)
    a = table.create("c1", "a1", 0.0)
    run(a, (E.INVITE, 0.0), (E.FAILURE, 0.5))
    table.remove("c1", "a1")
    assert table.get_timer() is None
    again = table.create("c1", "a1", 0.6)  # same key, a new dialog: not purged by the old entry
    assert table.purge(10.0) == [] and table.get("c1", "a1") is again


def test_zero_linger_removes_at_once_on_purge():
    table = PcscfDialogTable(linger=0)
    a = table.create("c1", "a1", 0.0)
    run(a, (E.INVITE, 0.0), (E.FAILURE, 0.5))
    assert table.get_timer() == 0.5
    assert table.purge(0.5) == [a]


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, True, "32"])
def test_bad_linger_is_a_value_error(bad):
    with pytest.raises(ValueError, match="linger"):
        PcscfDialogTable(linger=bad)


def test_table_hanging_lists_stuck_dialogs():
    table = PcscfDialogTable()
    stuck = table.create("c1", "a1", 0.0)
    stuck.on_event(E.INVITE, 0.0)
    fresh = table.create("c2", "b1", 9.0)
    fresh.on_event(E.INVITE, 9.0)
    done = table.create("c3", "d1", 0.0)
    run(done, (E.INVITE, 0.0), (E.FAILURE, 0.1))
    assert table.hanging(10.0, 5.0) == [stuck]
