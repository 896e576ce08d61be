"""The S-CSCF as its three modules (``004`` Fig. 1, 7): Session Controller, Incoming and
Outgoing Leg Control. Each is its own actor on its own UDP port.

- ``SessionController``: the registrar (REGISTER with digest authentication
  against the HSS's credentials, re-registration, de-registration, expiry held
  by the HSS) and the entry of calls from the P-CSCF, which it forwards to the
  Incoming Leg Control.
- ``ScscfIncomingLegControl``: keeps the incoming leg of each call (a table by
  Call-ID that the fault-tolerance work checkpoints) and hands the call to the AS.
- ``ScscfOutgoingLegControl``: the terminating side: looks the callee up in the
  HSS (404 unknown user, 480 not registered), retargets the Request-URI to the
  newest registered contact and routes it through that binding's Path (the
  P-CSCF).

HSS queries use the control protocol (``actors.control.ControlPeer``); they
are awaited inside SIP hooks, which ``SipActor`` runs as tasks on the actor's
loop. A 100 Trying has already gone upstream by then.
"""

from __future__ import annotations

from typing import Any, ClassVar

from actors.control import ControlError, ControlFailure, ControlPeer
from actors.sip.digest import DigestChallenger, Verdict
from actors.sip.headers import parse_name_addr
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address
from nf_modules.ims_module import ImsModule

__all__ = ["ScscfIncomingLegControl", "ScscfOutgoingLegControl", "SessionController"]

DEFAULT_EXPIRES = 3600

_HSS_STAT_KEYS: dict[str, str] = {}  # op -> "hss_<op>", built once per op, not per query


class _HssClient(ImsModule):
    """An IMS module that talks to the HSS over the control protocol."""

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), *, hss: Address | None = None, **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.hss = tuple(hss) if hss is not None else None
        self.control: ControlPeer | None = None

    async def on_start(self) -> None:
        await super().on_start()
        # Named after the instance, so that a crash fault (which closes every socket of the
        # instance it finds by name, faults.targets.instance_endpoints) closes this one too.
        self.control = await ControlPeer.open(self, (self.address[0], 0), name=f"{self.name}.control",
                                              clock=self.clock)

    def _close(self) -> None:
        if self.control is not None:
            self.control.close()
        super()._close()

    async def hss_request(self, op: str, **args: Any) -> Any:
        if self.hss is None or self.control is None:
            raise ControlError("no_hss", f"{self.name} has no HSS configured")
        key = _HSS_STAT_KEYS.get(op)
        if key is None:
            key = _HSS_STAT_KEYS[op] = f"hss_{op}"
        self.stats[key] += 1
        # ControlPeer.request(dest, op, **args) is call(dest, op, args): one coroutine less.
        return await self.control.call(self.hss, op, args)

    def answer(self, transaction: Transaction, request: SipMessage, status: int, **headers: str) -> None:
        response = request.make_response(status)
        for name, value in headers.items():
            response.set(name.replace("_", "-"), value)
        try:
            self.send_response(transaction, response)
        except Exception:  # noqa: BLE001  (the transaction was answered or ended meanwhile)
            self.stats["late_answers"] += 1


class SessionController(_HssClient):
    """Registrar and call entry of the S-CSCF."""

    kind: ClassVar[str] = "scscf.session_controller"

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), *, nonce_ttl: float = 300.0, **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.challenger = DigestChallenger(self.domain, nonce_ttl=nonce_ttl)

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        if request.method == "REGISTER":
            return self._register(request, transaction)
        return super().on_request(request, transaction, source)

    async def _register(self, request: SipMessage, transaction: Transaction) -> None:
        aor = request.get("To") or ""
        try:
            vector = await self.hss_request("auth_vector", impu=aor)
        except ControlError as error:
            self.answer(transaction, request, 404 if error.code == "not_found" else 400)
            return
        except ControlFailure:
            self.answer(transaction, request, 504)
            return
        authorization = request.get("Authorization")
        if authorization is None:
            self.stats["register_challenged"] += 1
            self.answer(transaction, request, 401, WWW_Authenticate=self.challenger.challenge(self.now))
            return
        verdict = self.challenger.verify(authorization, "REGISTER", vector["ha1"], self.now)
        if verdict is Verdict.MALFORMED:
            self.answer(transaction, request, 400)
            return
        if verdict is Verdict.BAD_RESPONSE:
            self.stats["register_forbidden"] += 1
            self.answer(transaction, request, 403)
            return
        if verdict is not Verdict.OK:
            stale = verdict is Verdict.STALE
            self.answer(transaction, request, 401, WWW_Authenticate=self.challenger.challenge(self.now, stale=stale))
            return
        await self._update_bindings(request, transaction, vector["impu"])

    async def _update_bindings(self, request: SipMessage, transaction: Transaction, impu: str) -> None:
        contacts = request.get_all("Contact")
        default_expires = _int(request.get("Expires"), DEFAULT_EXPIRES)
        path = request.get_all("Path")
        try:
            if contacts == ["*"]:
                if default_expires != 0:
                    self.answer(transaction, request, 400)
                    return
                result = await self.hss_request("deregister", impu=impu)
            else:
                result = None
                for contact in contacts:
                    expires = _int(_param(contact, "expires"), default_expires)
                    uri = str(parse_name_addr(contact).uri)
                    if expires == 0:
                        result = await self.hss_request("deregister", impu=impu, contact=uri)
                    else:
                        result = await self.hss_request(
                            "register", impu=impu, contact=uri, expires=expires, path=path,
                            pcscf=path[0] if path else None,
                        )
                if result is None:  # a fetch of the current bindings
                    result = await self.hss_request("lookup", impu=impu)
        except (ControlError, ValueError):
            self.answer(transaction, request, 400)
            return
        except ControlFailure:
            self.answer(transaction, request, 504)
            return
        ok = request.make_response(200)
        for binding in result["bindings"]:
            ok.add("Contact", f"<{binding['contact']}>;expires={int(binding['expires'])}")
        for value in path:
            ok.add("Path", value)
        ok.set("Service-Route", self.own_uri())
        self.stats["registered" if result["bindings"] else "deregistered"] += 1
        self.send_response(transaction, ok)


class ScscfIncomingLegControl(ImsModule):
    """Holds each call's incoming leg and hands the call to the AS."""

    kind: ClassVar[str] = "scscf.incoming_leg_control"

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.sessions: dict[str, dict[str, Any]] = {}
        """Incoming legs by Call-ID: caller, callee, when it started (the checkpoint table's seed)."""

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        if method == "INVITE":
            if request.to_tag is None:
                self.sessions[request.call_id or ""] = {
                    "from": request.get("From"), "to": request.get("To"), "since": self.now}
        elif method == "BYE":
            self.sessions.pop(request.call_id or "", None)
        return super().on_request(request, transaction, source)

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        # The status first: most responses are 1xx/2xx, which leave the table alone.
        if (response.status or 0) >= 300:
            cseq = response.cseq
            if cseq and cseq[1] == "INVITE":
                self.sessions.pop(response.call_id or "", None)
        return super().on_response(response, transaction)

    def get_sessions(self) -> int:
        return len(self.sessions)


class ScscfOutgoingLegControl(_HssClient):
    """Terminating leg: HSS lookup, retarget to the newest contact, route via its Path."""

    kind: ClassVar[str] = "scscf.outgoing_leg_control"

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        initial = request.to_tag is None and request.method not in ("ACK", "CANCEL", "REGISTER")
        if initial and not request.get_all("Route")[1:]:
            return self._terminate(request, transaction, source)
        return super().on_request(request, transaction, source)

    async def _terminate(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        try:
            found = await self.hss_request("lookup", impu=request.uri)
        except ControlError as error:
            self.answer(transaction, request, 404 if error.code in ("not_found", "bad_args") else 500)
            return None
        except ControlFailure:
            self.answer(transaction, request, 504)
            return None
        bindings = found["bindings"]
        if not bindings:
            self.stats["not_registered"] += 1
            self.answer(transaction, request, 480)
            return None
        newest = bindings[-1]
        request.uri = newest["contact"]
        self.pop_own_route(request)
        request.remove("Route")
        for value in newest["path"]:
            request.add("Route", value)
        return super().on_request(request, transaction, source)


def _int(value: str | None, default: int) -> int:
    try:
        return max(0, int(value)) if value is not None else default
    except ValueError:
        return default


def _param(header_value: str, name: str) -> str | None:
    try:
        return parse_name_addr(header_value).params.get(name)
    except ValueError:
        return None
