"""``AsyncioActorRef``: pykka's ``ActorRef`` with a lean ``tell`` for asyncio actors."""

from __future__ import annotations

from typing import Any, TypeVar

import pykka
from pykka import ActorDeadError

__all__ = ["AsyncioActorRef"]

A = TypeVar("A", bound=pykka.Actor)


class AsyncioActorRef(pykka.ActorRef[A]):
    """Same contract as ``pykka.ActorRef``; ``tell`` skips the envelope object.

    ``tell`` is the hot path of every module hop, so it hands the message to
    the inbox directly instead of wrapping it in a pykka ``Envelope`` first.
    """

    def tell(self, message: Any) -> None:
        if self.actor_stopped.is_set():
            raise ActorDeadError(f"{self} not found")
        self.actor_inbox.put_message(message)  # type: ignore[attr-defined]
