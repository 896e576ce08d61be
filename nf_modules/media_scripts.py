"""Media scripts: the documents the AS's Media Policy hands out and the MRFC's Media Control runs.

Paper ``004`` V-A: "media application behavior is defined in terms of markup languages/scripts
(VoiceXML, SCXML, CCXML) ... located on the AS and retrieved by the MRFC using HTTP", and "AS can
exercise more fine-grained control ... by defining smaller scripts for the MRFC to execute and
requiring MRFC to retrieve further scripts from AS" (Fig. 3a). Ours are small JSON documents::

    {"name": "call",
     "rules": [
       {"name": "g711",
        "when": {"payload_size": [160, 240], "packet_rate": [30, 50]},
        "then": {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}},
       {"name": "adapt", "fetch": "adapt"}
     ]}

A rule matches a flow's metadata set when every ``when`` condition holds: a metadata value
(:data:`~nf_modules.media_prediction.METADATA_KEYS`) inside the inclusive range ``[low, high]``
(the instructions' "built-in tolerance range", VI-A: G.711 for payloads of 160-240 bytes at 30-50
packets/s), or ``"side": "A"|"B"`` (the side the flow arrives on). Rules are tried in order; the
first match decides: ``then`` is the :class:`ControlInstruction`, ``fetch`` names a finer-grained
script (resolved against this script's URL) to fetch and run on the same metadata. No rule
matching means the default instruction (forward unchanged).

:func:`parse_script` validates a document and raises :class:`MediaScriptError` naming the field
(``rules[1].when.packet_rate: ...``). :class:`ScriptServer` is the AS side: an aiohttp app
serving a :class:`ScriptLibrary` at ``GET /scripts/<name>``, with an emulated capacity
(:class:`~actors.service_rate.ServiceRate`: requests queue for their service slot, 503 when the
queue is full) and fetch counters. It runs on the loop of the actor that starts it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from actors.clock import Clock, LoopClock
from actors.service_rate import DEFAULT_QUEUE_LIMIT, ServiceRate
from nf_modules.media_prediction import METADATA_KEYS

__all__ = [
    "ACTIONS",
    "CODECS",
    "DEFAULT_LIBRARY",
    "ControlInstruction",
    "Fetch",
    "MediaScript",
    "MediaScriptError",
    "Rule",
    "ScriptLibrary",
    "ScriptServer",
    "TRANSCODES",
    "parse_script",
]

ACTIONS = ("forward", "drop", "sink")
CODECS = ("PCMU", "PCMA")
TRANSCODES = (None, "ulaw2alaw", "alaw2ulaw")
MAX_RULES = 64
MAX_SCRIPT_BYTES = 64 * 1024


class MediaScriptError(ValueError):
    """A media script that cannot be used; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class ControlInstruction:
    """What the Media Processor does with a flow's packets: the Media Control's output.

    ``codec``/``bitrate_kbps`` describe the media (paper V-A: "codec bit rate, codec sample size
    and codec interval"); ``transcode``, ``ptime_ms`` (repacketize; ``None`` keeps the
    sender's) and ``payload_type`` (``None``: keep, or the transcoder's) are what the engine
    applies. Two instructions are the same when all fields are equal, whatever rule made them.
    """

    action: str = "forward"
    codec: str | None = None
    bitrate_kbps: float | None = None
    ptime_ms: int | None = None
    transcode: str | None = None
    payload_type: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "instruction") -> ControlInstruction:
        """Validate and build; :class:`MediaScriptError` naming ``where.<field>``."""
        if not isinstance(data, Mapping):
            raise MediaScriptError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise MediaScriptError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        action = data.get("action", "forward")
        if action not in ACTIONS:
            raise MediaScriptError(f"{where}.action: must be one of {ACTIONS}, got {action!r:.40}")
        codec = data.get("codec")
        if codec is not None and codec not in CODECS:
            raise MediaScriptError(f"{where}.codec: must be one of {CODECS}, got {codec!r:.40}")
        transcode = data.get("transcode")
        if transcode not in TRANSCODES:
            raise MediaScriptError(f"{where}.transcode: must be one of {TRANSCODES}, got {transcode!r:.40}")
        bitrate = data.get("bitrate_kbps")
        if bitrate is not None and (not _is_number(bitrate) or bitrate <= 0):
            raise MediaScriptError(f"{where}.bitrate_kbps: must be a number > 0, got {bitrate!r:.40}")
        ptime = data.get("ptime_ms")
        if ptime is not None and (not _is_int(ptime) or not 10 <= ptime <= 120 or ptime % 10):
            raise MediaScriptError(f"{where}.ptime_ms: must be 10, 20, ... 120, got {ptime!r:.40}")
        payload_type = data.get("payload_type")
        if payload_type is not None and (not _is_int(payload_type) or not 0 <= payload_type <= 127):
            raise MediaScriptError(f"{where}.payload_type: must be an int 0-127, got {payload_type!r:.40}")
        return cls(action, codec, None if bitrate is None else float(bitrate), ptime, transcode, payload_type)


@dataclass(frozen=True, slots=True)
class Fetch:
    """A rule's decision to run a finer-grained script: ``ref`` relative to the script's URL."""

    ref: str


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    ranges: tuple[tuple[str, float, float], ...]
    side: str | None
    decision: ControlInstruction | Fetch

    def matches(self, metadata: Mapping[str, float], side: str | None) -> bool:
        if self.side is not None and side != self.side:
            return False
        for key, low, high in self.ranges:
            value = metadata.get(key)
            if value is None or not low <= value <= high:
                return False
        return True


@dataclass(frozen=True, slots=True)
class MediaScript:
    """A parsed script; :meth:`decide` runs it on one metadata set."""

    name: str
    rules: tuple[Rule, ...]

    def decide(self, metadata: Mapping[str, float], side: str | None = None) -> tuple[str, ControlInstruction | Fetch]:
        """``(rule name, decision)`` of the first matching rule, or ``("", default)``."""
        for rule in self.rules:
            if rule.matches(metadata, side):
                return rule.name, rule.decision
        return "", ControlInstruction()


def parse_script(document: bytes | str | Mapping[str, Any]) -> MediaScript:
    """Validate a script document (JSON text or an already decoded object)."""
    if isinstance(document, (bytes, str)):
        if len(document) > MAX_SCRIPT_BYTES:
            raise MediaScriptError(f"script: longer than {MAX_SCRIPT_BYTES} bytes")
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError) as error:
            raise MediaScriptError(f"script: not JSON ({error})") from None
    if not isinstance(document, Mapping):
        raise MediaScriptError(f"script: expected an object, got {type(document).__name__}")
    unknown = set(document) - {"name", "rules"}
    if unknown:
        raise MediaScriptError(f"script: unknown field {sorted(unknown)[0]!r}")
    name = document.get("name", "")
    if not isinstance(name, str):
        raise MediaScriptError(f"script.name: expected a string, got {name!r:.40}")
    rules = document.get("rules")
    if not isinstance(rules, list):
        raise MediaScriptError(f"script.rules: expected a list, got {type(rules).__name__}")
    if len(rules) > MAX_RULES:
        raise MediaScriptError(f"script.rules: more than {MAX_RULES} rules")
    return MediaScript(name, tuple(_parse_rule(rule, f"rules[{i}]") for i, rule in enumerate(rules)))


def _parse_rule(rule: object, where: str) -> Rule:
    if not isinstance(rule, Mapping):
        raise MediaScriptError(f"{where}: expected an object, got {type(rule).__name__}")
    unknown = set(rule) - {"name", "when", "then", "fetch"}
    if unknown:
        raise MediaScriptError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    name = rule.get("name", where)
    if not isinstance(name, str):
        raise MediaScriptError(f"{where}.name: expected a string, got {name!r:.40}")
    when = rule.get("when", {})
    if not isinstance(when, Mapping):
        raise MediaScriptError(f"{where}.when: expected an object, got {type(when).__name__}")
    ranges: list[tuple[str, float, float]] = []
    side = None
    for key, value in when.items():
        if key == "side":
            if value not in ("A", "B"):
                raise MediaScriptError(f"{where}.when.side: must be 'A' or 'B', got {value!r:.40}")
            side = value
            continue
        if key not in METADATA_KEYS:
            raise MediaScriptError(f"{where}.when.{key}: unknown metadata (known: side, {', '.join(METADATA_KEYS)})")
        if (not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) for v in value)
                or value[0] > value[1]):
            raise MediaScriptError(f"{where}.when.{key}: expected [low, high] with low <= high, got {value!r:.60}")
        ranges.append((key, float(value[0]), float(value[1])))
    has_then, has_fetch = "then" in rule, "fetch" in rule
    if has_then == has_fetch:
        raise MediaScriptError(f"{where}: needs exactly one of 'then' and 'fetch'")
    if has_fetch:
        ref = rule["fetch"]
        if not isinstance(ref, str) or not ref or len(ref) > 200 or any(c in ref for c in " \r\n?#"):
            raise MediaScriptError(f"{where}.fetch: expected a script name, got {ref!r:.60}")
        decision: ControlInstruction | Fetch = Fetch(ref)
    else:
        decision = ControlInstruction.from_dict(rule["then"], f"{where}.then")
    return Rule(name, tuple(ranges), side, decision)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


# -- the AS side --------------------------------------------------------------------------------

#: The AS's default scripts: G.711 inside its tolerance range; off the range the AS keeps
#: finer-grained control with a second script (Fig. 3a), which keeps G.711 at 20 ms too.
DEFAULT_LIBRARY: dict[str, dict[str, Any]] = {
    "call": {
        "name": "call",
        "rules": [
            {"name": "g711", "when": {"payload_size": [160, 240], "packet_rate": [30, 50]},
             "then": {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}},
            {"name": "adapt", "fetch": "adapt"},
        ],
    },
    "adapt": {
        "name": "adapt",
        "rules": [
            {"name": "g711-off-range", "then": {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}},
        ],
    },
}


class ScriptLibrary:
    """Named script documents, each validated at construction (``MediaScriptError`` names the
    script: ``script 'adapt': rules[0]...``). ``root`` is the script a call starts with."""

    def __init__(self, scripts: Mapping[str, Mapping[str, Any]] | None = None, *, root: str = "call") -> None:
        scripts = DEFAULT_LIBRARY if scripts is None else scripts
        self.documents: dict[str, bytes] = {}
        for name, document in scripts.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise MediaScriptError(f"script name must be a non-empty string without '/', got {name!r:.40}")
            try:
                parsed = parse_script(document)
            except MediaScriptError as error:
                raise MediaScriptError(f"script {name!r}: {error}") from None
            for rule in parsed.rules:
                if isinstance(rule.decision, Fetch) and rule.decision.ref not in scripts:
                    raise MediaScriptError(f"script {name!r}: rule {rule.name!r} fetches unknown script {rule.decision.ref!r}")
            self.documents[name] = json.dumps(document).encode()
        if root not in self.documents:
            raise MediaScriptError(f"root script {root!r} is not in the library")
        self.root = root


class ScriptServer:
    """The AS's HTTP script server (aiohttp, on the running loop): ``GET /scripts/<name>``.

    ``capacity``: requests served per second (``None``: unlimited); a request waits for its
    service slot (:class:`ServiceRate`, the same queue model as the SIP modules' capacity) and
    gets 503 when ``queue_limit`` are waiting. ``stats``: ``fetches``, ``fetch_<name>``,
    ``not_found``, ``rejected_503``.
    """

    def __init__(self, library: ScriptLibrary, *, capacity: float | None = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT, clock: Clock | None = None) -> None:
        self.library = library
        self.rate = ServiceRate(capacity, queue_limit)
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/scripts/{name}", self._get)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; return the root script's URL (``http://host:port/scripts/<root>``)."""
        self.clock = self.clock or LoopClock(asyncio.get_running_loop())
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}/scripts/{self.library.root}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        document = self.library.documents.get(name)
        if document is None:
            self.stats["not_found"] += 1
            return web.Response(status=404, text=f"no script {name!r}")
        clock = self.clock
        assert clock is not None
        finish = self.rate.admit(clock.now())
        if finish is None:
            self.stats["rejected_503"] += 1
            return web.Response(status=503, headers={"Retry-After": str(self.rate.retry_after(clock.now()))})
        if finish > clock.now():  # wait for the service slot (emulated capacity)
            served = asyncio.get_running_loop().create_future()
            handle = clock.call_at(finish, lambda: served.done() or served.set_result(None))
            try:
                await served
            finally:
                handle.cancel()
        self.stats["fetches"] += 1
        self.stats[f"fetch_{name}"] += 1
        return web.Response(body=document, content_type="application/json")
