"""The HSS: subscribers, credentials, registrations and serving P-CSCF, over the control protocol.

A thin :class:`~actors.control.ControlActor` around :class:`~nf_modules.hss_store.HssStore`; all
handlers run on the actor's loop (called from its UDP endpoint's callback, see
``actors.control``), and time is the actor's clock, so registrations expire in emulated time.

Operations (``args`` -> ``result``; unknown identities answer the error ``not_found``, bad
arguments ``bad_args``):

==================  ===========================================  ==========================================
op                  args                                         result
==================  ===========================================  ==========================================
``auth_vector``     ``impu``, ``algorithm="MD5"``                ``{impu, impi, username, realm, algorithm, ha1}``
``register``        ``impu, contact, expires, path=[], pcscf``   ``{impu, expires, bindings: [...]}``
``deregister``      ``impu, contact=None`` (None/"*": all)       ``{impu, removed, bindings: [...]}``
``lookup``          ``impu``                                     ``{impu, bindings: [{contact, expires, path, pcscf}]}``
``serving_pcscf``   ``impu``                                     ``{impu, pcscf}`` (``null`` if not registered)
``list_registered`` ``offset=0, limit=500``                      ``{impus: [...], total, next}`` (``next``: offset or null)
``stats``                                                        counters (subscribers, registered, ...)
``ping``                                                         ``{pong: true, name}``
==================  ===========================================  ==========================================

``impu`` may be ``sip:user@domain``, ``user@domain`` or a bare ``user`` (the home domain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.control import ControlActor, ControlError
from actors.sip.digest import DigestError
from nf_modules.hss_store import HssConfig, HssStore, UnknownSubscriber

__all__ = ["Hss"]

MAX_PAGE = 1000


class Hss(ControlActor):
    """The Home Subscriber Server module of the IMS."""

    def __init__(
        self,
        name: str = "hss",
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        config: HssConfig | Mapping[str, Any] | None = None,
        domain: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``config``: an :class:`HssConfig` or a topology's options mapping (``users``,
        ``user_format``, ``first``, ``password``, ``domain``, ``realm``, ``max_expires``,
        ``extra``); ``domain`` (the topology's) is the default for a mapping's ``domain``.
        Other keyword arguments go to :class:`~actors.control.ControlActor`. Bad options raise
        ``ValueError`` here, in the caller's thread."""
        super().__init__(name, bind, **kwargs)
        if not isinstance(config, HssConfig):
            config = HssConfig.from_options(config, domain=domain)
        self.store = HssStore(config)

    # -- errors ------------------------------------------------------------------

    def _subscriber_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UnknownSubscriber as error:
            raise ControlError("not_found", str(error)) from None
        except (ValueError, DigestError) as error:
            raise ControlError("bad_args", str(error)) from None

    # -- operations (control protocol handlers, on the actor's loop) -------------------

    def handle_auth_vector(self, impu: str, algorithm: str = "MD5") -> dict[str, str]:
        return self._subscriber_call(self.store.auth_vector, impu, algorithm)

    def handle_register(
        self,
        impu: str,
        contact: str,
        expires: float,
        path: list[str] | None = None,
        pcscf: str | None = None,
    ) -> dict[str, Any]:
        now = self.now
        granted, bindings = self._subscriber_call(
            self.store.register, impu, contact, expires, now, path=path or (), pcscf=pcscf
        )
        return {
            "impu": self.store.subscriber(impu).impu,
            "expires": granted,
            "bindings": [b.as_dict(now) for b in bindings],
        }

    def handle_deregister(self, impu: str, contact: str | None = None) -> dict[str, Any]:
        now = self.now
        removed = self._subscriber_call(self.store.deregister, impu, now, contact)
        return {
            "impu": self.store.subscriber(impu).impu,
            "removed": removed,
            "bindings": [b.as_dict(now) for b in self.store.lookup(impu, now)],
        }

    def handle_lookup(self, impu: str) -> dict[str, Any]:
        # The S-CSCF's per-call query: the identity is resolved once, not again for the reply.
        now = self.now
        subscriber = self._subscriber_call(self.store.subscriber, impu)
        bindings = self.store.bindings_of(subscriber, now)
        self.store.counters["lookup"] += 1
        return {"impu": subscriber.impu, "bindings": [b.as_dict(now) for b in bindings]}

    def handle_serving_pcscf(self, impu: str) -> dict[str, Any]:
        pcscf = self._subscriber_call(self.store.serving_pcscf, impu, self.now)
        return {"impu": self.store.subscriber(impu).impu, "pcscf": pcscf}

    def handle_list_registered(self, offset: int = 0, limit: int = 500) -> dict[str, Any]:
        for name, value in (("offset", offset), ("limit", limit)):
            if type(value) is not int or value < 0:
                raise ControlError("bad_args", f"{name} must be a non-negative integer")
        limit = min(limit, MAX_PAGE)
        impus = self.store.list_registered(self.now)
        page = impus[offset : offset + limit]
        following = offset + len(page)
        return {"impus": page, "total": len(impus), "next": following if following < len(impus) else None}

    def handle_stats(self) -> dict[str, int]:
        return self.store.stats(self.now)

    # -- asks (through a proxy, from any thread) ---------------------------------------

    def get_stats(self) -> dict[str, int]:
        """The store's counters plus the control port's (``hss_`` prefix for the store)."""
        out = super().get_stats()
        out.update({f"hss_{k}": v for k, v in self.store.stats(self.now).items()})
        return out
