"""What to answer to a datagram the codec rejected.

RFC 3261 lets a server answer a malformed request with a 4xx/5xx when it can
still find the headers a response must copy (Via, From, To, Call-ID, CSeq).
``answer_malformed`` digs those out of the raw bytes leniently and builds that
response; when the datagram is a response, is not SIP at all, or lacks them,
or when a value it would copy holds control characters (a bare CR would make
the answer itself malformed), it returns ``None`` and the caller counts and
drops the datagram.
"""

from __future__ import annotations

from actors.sip.headers import SipParseError
from actors.sip.message import REASON_PHRASES

__all__ = ["answer_malformed"]

_COPIED = {
    "via": "Via",
    "v": "Via",
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "call-id": "Call-ID",
    "i": "Call-ID",
    "cseq": "CSeq",
}
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


def answer_malformed(data: bytes, error: SipParseError) -> bytes | None:
    """The response bytes for a malformed request, or ``None`` if it cannot be answered."""
    text = data[:8192].decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = [line.rstrip("\r") for line in head.split("\n")]
    start = lines[0].strip() if lines else ""
    parts = start.split()
    if len(parts) < 2 or start.upper().startswith("SIP/") or not parts[0].isalpha():
        return None  # a response, or not a SIP request line at all
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not value.strip() or "\x00" in line:
            continue
        canonical = _COPIED.get(name.strip().lower())
        if canonical is not None:
            if any(ch < " " and ch != "\t" for ch in value):
                return None  # a value we would have to copy is itself broken: no faithful answer
            found.setdefault(canonical, []).append(value.strip())
    if any(name not in found for name in _REQUIRED):
        return None
    status = error.status if 400 <= error.status <= 699 else 400
    reason = (error.reason or REASON_PHRASES.get(status, "Bad Request")).replace("\r", " ").replace("\n", " ")
    out = [f"SIP/2.0 {status} {reason[:120]}"]
    for name in _REQUIRED:
        values = found[name] if name == "Via" else found[name][:1]
        out.extend(f"{name}: {value}" for value in values)
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "replace")
