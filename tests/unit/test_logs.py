"""Structured logging: JSON lines with the bound fields, console on terminals, levels, idempotence."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from actors.logs import configure_logging, get_logger, reset_logging


@pytest.fixture(autouse=True)
def _restore_logging():
    reset_logging()
    structlog.contextvars.clear_contextvars()
    yield
    reset_logging()
    structlog.contextvars.clear_contextvars()


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_module_instance_call_id_level_and_timestamp():
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    log = get_logger("pcscf", instance="pcscf-1")
    log.bind(call_id="a84b4c76e66710@ue0001").info("invite_forwarded", hop="scscf", cseq=1)
    (event,) = lines(out)
    assert event["event"] == "invite_forwarded"
    assert event["module"] == "pcscf"
    assert event["instance"] == "pcscf-1"
    assert event["call_id"] == "a84b4c76e66710@ue0001"
    assert event["hop"] == "scscf" and event["cseq"] == 1
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]


def test_one_event_per_line_even_with_a_traceback():
    out = io.StringIO()
    configure_logging(stream=out, json=True)
    log = get_logger("mrfp")
    log.info("first")
    try:
        raise ZeroDivisionError("x")
    except ZeroDivisionError:
        log.exception("failed", call_id="c1")
    log.warning("third")
    events = lines(out)
    assert [e["event"] for e in events] == ["first", "failed", "third"]
    assert "ZeroDivisionError" in events[1]["exception"]
    assert events[1]["level"] == "error" and events[1]["call_id"] == "c1"
    assert "instance" not in events[0]  # not bound when not given


def test_extra_bound_values_and_contextvars_are_merged():
    out = io.StringIO()
    configure_logging(stream=out, json=True)
    structlog.contextvars.bind_contextvars(call_id="ctx-call")
    get_logger("hss", instance="hss-0", process="main").info("lookup")
    (event,) = lines(out)
    assert event["process"] == "main" and event["call_id"] == "ctx-call" and event["instance"] == "hss-0"


def test_level_filters_lower_events():
    out = io.StringIO()
    configure_logging("warning", json=True, stream=out)
    log = get_logger("scscf")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [e["event"] for e in lines(out)] == ["w", "e"]


def test_json_is_chosen_when_the_stream_is_not_a_terminal_and_console_when_it_is():
    plain = io.StringIO()
    configure_logging(stream=plain)  # json=None: decide by isatty()
    get_logger("pcscf", instance="p").info("hello", n=1)
    assert json.loads(plain.getvalue())["event"] == "hello"

    tty = TTY()
    configure_logging(stream=tty)
    get_logger("pcscf", instance="p").info("hello", n=1)
    text = tty.getvalue()
    assert text.count("\n") == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert "hello" in text and "instance" in text and "module" in text


def test_configure_is_idempotent_and_loggers_follow_reconfiguration():
    first = io.StringIO()
    log = get_logger("as", instance="as-1")  # obtained before any configuration
    configure_logging("info", json=True, stream=first)
    configure_logging("info", json=True, stream=first)  # same arguments: no change, no duplicates
    log.info("once")
    assert [e["event"] for e in lines(first)] == ["once"]

    second = io.StringIO()
    configure_logging("debug", json=True, stream=second)
    log.debug("moved")
    assert [e["event"] for e in lines(second)] == ["moved"]
    assert [e["event"] for e in lines(first)] == ["once"]


def test_repeated_identical_configuration_does_not_reconfigure(monkeypatch):
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    calls: list[dict] = []
    real = structlog.configure
    monkeypatch.setattr(structlog, "configure", lambda **kw: (calls.append(kw), real(**kw)))
    configure_logging("info", json=True, stream=out)
    configure_logging("INFO", json=True, stream=out)
    assert calls == []
    configure_logging("info", json=False, stream=out)
    assert len(calls) == 1


@pytest.mark.parametrize("bad", ["loud", "", -1, True])
def test_unknown_levels_are_refused(bad):
    with pytest.raises(ValueError, match="level"):
        configure_logging(bad, stream=io.StringIO())


def test_level_names_are_case_insensitive_and_numbers_are_accepted():
    out = io.StringIO()
    configure_logging("ERROR", json=True, stream=out)
    get_logger("x").warning("no")
    get_logger("x").error("yes")
    configure_logging(10, json=True, stream=out)
    get_logger("x").debug("debug-too")
    assert [e["event"] for e in lines(out)] == ["yes", "debug-too"]


def test_default_stream_is_the_current_stderr(capsys):
    configure_logging(json=True)
    get_logger("ue_pool").info("to_stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to_stderr"
