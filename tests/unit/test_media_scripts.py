"""Media scripts: the format, the tolerance ranges of 004 VI-A, and bad scripts -> clear errors."""

import json

import pytest

from nf_modules.media_scripts import (
    DEFAULT_LIBRARY,
    ControlInstruction,
    Fetch,
    MediaScriptError,
    ScriptLibrary,
    parse_script,
)

G711 = {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}


def m(payload: float, rate: float, jitter: float = 0.0) -> dict[str, float]:
    return {"payload_size": payload, "packet_rate": rate, "jitter_ms": jitter}


def test_g711_tolerance_range_is_inclusive_and_off_range_fetches_the_finer_script():
    script = parse_script(DEFAULT_LIBRARY["call"])
    inside = ControlInstruction(codec="PCMU", bitrate_kbps=64.0, ptime_ms=20)
    for payload, rate in [(160, 30), (240, 50), (200, 40), (160.0, 50.0)]:
        assert script.decide(m(payload, rate)) == ("g711", inside), (payload, rate)
    for payload, rate in [(159.9, 40), (240.1, 40), (200, 29.9), (200, 50.5), (80, 50)]:
        assert script.decide(m(payload, rate)) == ("adapt", Fetch("adapt")), (payload, rate)


def test_first_matching_rule_wins_side_conditions_and_no_match_is_the_default():
    script = parse_script(json.dumps({"name": "t", "rules": [
        {"name": "a-law for B", "when": {"side": "A", "payload_size": [160, 240]},
         "then": {"codec": "PCMA", "transcode": "ulaw2alaw"}},
        {"name": "g711", "when": {"payload_size": [160, 240]}, "then": G711},
    ]}))
    assert script.decide(m(160, 50), "A") == ("a-law for B", ControlInstruction(codec="PCMA", transcode="ulaw2alaw"))
    assert script.decide(m(160, 50), "B")[0] == "g711"
    assert script.decide(m(100, 50), "B") == ("", ControlInstruction())


def test_instruction_round_trips_and_equality_ignores_the_rule():
    i = ControlInstruction.from_dict({"action": "forward", "codec": "PCMA", "bitrate_kbps": 64,
                                      "ptime_ms": 30, "transcode": "ulaw2alaw", "payload_type": 8})
    assert ControlInstruction.from_dict(i.as_dict()) == i
    assert i.bitrate_kbps == 64.0 and isinstance(i.bitrate_kbps, float)


@pytest.mark.parametrize("document, message", [
    (b"{not json", "script: not JSON"),
    ([], "script: expected an object"),
    ({"rules": {}}, "script.rules: expected a list"),
    ({"rules": [], "extra": 1}, "script: unknown field 'extra'"),
    ({"rules": [7]}, r"rules\[0\]: expected an object"),
    ({"rules": [{"then": G711, "fetch": "x"}]}, r"rules\[0\]: needs exactly one of 'then' and 'fetch'"),
    ({"rules": [{"when": {}}]}, r"rules\[0\]: needs exactly one"),
    ({"rules": [{"when": {"payload_size": [240, 160]}, "then": G711}]}, r"rules\[0\]\.when\.payload_size: expected \[low, high\]"),
    ({"rules": [{"when": {"payload_size": [1]}, "then": G711}]}, r"rules\[0\]\.when\.payload_size"),
    ({"rules": [{"when": {"bandwidth": [1, 2]}, "then": G711}]}, r"rules\[0\]\.when\.bandwidth: unknown metadata"),
    ({"rules": [{"when": {"side": "C"}, "then": G711}]}, r"rules\[0\]\.when\.side"),
    ({"rules": [G711 and {"then": {"codec": "G729"}}]}, r"rules\[0\]\.then\.codec"),
    ({"rules": [{"then": {"ptime_ms": 25}}]}, r"rules\[0\]\.then\.ptime_ms"),
    ({"rules": [{"then": {"transcode": "gsm"}}]}, r"rules\[0\]\.then\.transcode"),
    ({"rules": [{"then": {"action": "explode"}}]}, r"rules\[0\]\.then\.action"),
    ({"rules": [{"then": {"bitrate_kbps": -1}}]}, r"rules\[0\]\.then\.bitrate_kbps"),
    ({"rules": [{"then": {"payload_type": 128}}]}, r"rules\[0\]\.then\.payload_type"),
    ({"rules": [{"then": {"colour": "red"}}]}, r"rules\[0\]\.then: unknown field 'colour'"),
    ({"rules": [{"fetch": "a b"}]}, r"rules\[0\]\.fetch: expected a script name"),
    (b"x" * 70000, "longer than"),
])
def test_bad_scripts_name_the_field(document, message):
    with pytest.raises(MediaScriptError, match=message):
        parse_script(document)


def test_library_validates_every_script_and_its_fetch_targets():
    assert ScriptLibrary().root == "call"
    with pytest.raises(MediaScriptError, match=r"script 'call': rules\[0\]\.then\.codec"):
        ScriptLibrary({"call": {"rules": [{"then": {"codec": "x"}}]}})
    with pytest.raises(MediaScriptError, match="fetches unknown script 'nowhere'"):
        ScriptLibrary({"call": {"rules": [{"fetch": "nowhere"}]}})
    with pytest.raises(MediaScriptError, match="root script 'call'"):
        ScriptLibrary({"other": {"rules": []}})
