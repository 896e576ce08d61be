"""``Pcrf``: the policy and charging rules function as the charging record keeper (paper ``004``
VIII-C, Fig. 12).

A control-protocol actor (``kind = "pcrf"``):

* ``authorize_media(subscriber, ue_host, ue_port, call_id="")`` (Rx-like, from the P-CSCF, the
  AF, at session set-up): has the PGW open a bearer for the UE's media stream (``open_bearer``,
  Gx-like) and answers its address ``{host, port}``: the P-CSCF points the UE's SDP there, so the
  UE's downlink crosses the PGW.
* ``session_ended(subscriber, call_id="")`` (Rx-like, from the P-CSCF when a call is released):
  the PGW releases the bearers opened for that call (all of the subscriber's without a call id).
* ``usage_report(source, subscriber, bytes, packets=0, dropped_bytes=0)``: cumulative usage per
  subscriber from a tap (``"pgw"``: bytes charged, i.e. relayed to the UE; ``"mrf"``: downlink
  bytes the MRFP sent towards the UE). Reports are cumulative, so a late older one never lowers
  a total: the PCRF keeps the largest value per (subscriber, source, field).
* ``charging()`` / ``get_charging()``: the totals and the discrepancy the paper's hanging dialog
  causes: per subscriber, the downlink bytes the MRF counted minus those the PGW charged
  (``discrepancy_bytes``, summed; without MRF reports, the bytes the PGW dropped).

Everything runs on the actor's loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

from actors.control import ControlActor, ControlError, ControlFailure

__all__ = ["Pcrf"]

Address = tuple[str, int]


class Pcrf(ControlActor):
    """``Pcrf(name, bind, *, pgw=None)``."""

    kind: ClassVar[str] = "pcrf"

    def __init__(self, name: str = "pcrf", bind: Address = ("127.0.0.1", 0), *,
                 pgw: Address | None = None, **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.pgw = tuple(pgw) if pgw is not None else None
        self.usage: dict[str, dict[str, dict[str, int]]] = {}
        self.ended: list[dict[str, Any]] = []
        self.sessions: dict[str, set[str]] = {}  # call id -> subscribers with a bearer for it

    def set_pgw(self, address: Address | None) -> None:
        self.pgw = tuple(address) if address is not None else None  # type: ignore[assignment]

    # -- operations ----------------------------------------------------------------------------

    async def handle_authorize_media(self, subscriber: str, ue_host: str, ue_port: int,
                                     call_id: str = "") -> dict[str, Any]:
        _check_name("subscriber", subscriber)
        if not isinstance(call_id, str):
            raise ControlError("bad_args", "call_id must be a string")
        if self.pgw is None:
            raise ControlError("no_pgw", "this PCRF has no PGW to open a bearer on")
        try:
            bearer = await self.control_request(self.pgw, "open_bearer", subscriber=subscriber,  # type: ignore[arg-type]
                                                ue_host=ue_host, ue_port=ue_port, call_id=call_id)
        except ControlError:
            raise
        except ControlFailure as error:
            raise ControlError("pgw_unavailable", f"PGW: {error}") from None
        self.sessions.setdefault(call_id, set()).add(subscriber)
        return {"host": bearer["host"], "port": bearer["port"]}

    def handle_usage_report(self, source: str, subscriber: str, bytes: int, packets: int = 0,  # noqa: A002
                            dropped_bytes: int = 0) -> dict[str, Any]:
        for name, value in (("bytes", bytes), ("packets", packets), ("dropped_bytes", dropped_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ControlError("bad_args", f"{name} must be a non-negative integer, got {value!r}")
        _check_name("source", source)
        _check_name("subscriber", subscriber)
        totals = self.usage.setdefault(subscriber, {}).setdefault(source, {"bytes": 0, "packets": 0, "dropped_bytes": 0})
        for name, value in (("bytes", bytes), ("packets", packets), ("dropped_bytes", dropped_bytes)):
            totals[name] = max(totals[name], value)
        return {"ok": True}

    async def handle_session_ended(self, subscriber: str, call_id: str = "") -> dict[str, Any]:
        _check_name("subscriber", subscriber)
        self.ended.append({"subscriber": subscriber, "call_id": call_id, "at": self.now})
        holders = self.sessions.pop(call_id, None) if call_id else None
        released = False
        if self.pgw is not None:
            for user, call in ([(u, call_id) for u in sorted(holders)] if holders else [(subscriber, None)]):
                try:
                    reply = await self.control_request(self.pgw, "release_bearer", subscriber=user, call_id=call)  # type: ignore[arg-type]
                    released = bool(reply["released"]) or released
                except ControlFailure as error:
                    self.log.info("bearer_release_failed", subscriber=user, error=str(error))
        return {"released": released}

    def handle_charging(self) -> dict[str, Any]:
        return self.get_charging()

    def get_charging(self) -> dict[str, Any]:
        """Totals per subscriber and source, sessions ended, and the discrepancy in bytes
        (in all, and per subscriber)."""
        per_subscriber: dict[str, int] = {}
        for subscriber, sources in self.usage.items():
            pgw = sources.get("pgw", {})
            mrf = sources.get("mrf")
            if mrf is not None:
                per_subscriber[subscriber] = mrf["bytes"] - pgw.get("bytes", 0)
            else:
                per_subscriber[subscriber] = pgw.get("dropped_bytes", 0)
        return {
            "usage": {s: {src: dict(v) for src, v in by.items()} for s, by in self.usage.items()},
            "ended": [dict(e) for e in self.ended],
            "discrepancy_by_subscriber": per_subscriber,
            "discrepancy_bytes": sum(max(0, d) for d in per_subscriber.values()),
        }


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ControlError("bad_args", f"{field} must be a non-empty string, got {value!r:.60}")
