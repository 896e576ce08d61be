"""The MRFC's Media Control (paper ``004`` Fig. 1, 3, 7): session data -> media-plane instructions.

Two kinds of input:

* **SDP** from the AS (:meth:`MediaControl.address_instructions`): an SDP from the UE of a side
  says where that UE receives; the Resource Controller tells the MRFP (:class:`MediaInstruction`).
* **Metadata** from the MRFP's Media Update (:meth:`MediaControl.control_instructions`): for each
  metadata set of a flow, run the call's media script and answer a
  :class:`~nf_modules.media_scripts.ControlInstruction` (codec, bit rate, packet interval,
  transcoding). The script comes from the AS over HTTP (:class:`ScriptFetcher`); a rule may send
  the MRFC to fetch a finer-grained script and run that (Fig. 3a), up to ``max_depth`` scripts.

The two modes (same code, chosen per instance):

* ``baseline``: every evaluation fetches the call's scripts from the AS again, serially (the AS
  "retains full media execution control by dynamically generating XML scripts"), so each
  metadata record costs one or more HTTP round trips through the AS's queue.
* ``refactored``: scripts are cached per call and URL; Media Update asks for *predicted* sets in
  batches, so the scripts the predicted conditions need are prefetched before the actual
  metadata arrives ("MRFC prefetches media execution scripts from AS by predicting media
  execution conditions").

Emulated capacity: each metadata set evaluated takes one service slot of a
:class:`~actors.service_rate.ServiceRate` (``capacity`` sets/s, ``queue_limit``); a request whose
sets do not fit in the queue is refused with ``ControlError("overloaded")``. Everything runs on
the MRFC's loop.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from actors.clock import Clock
from actors.control import ControlError
from actors.service_rate import DEFAULT_QUEUE_LIMIT, ServiceRate
from nf_modules.media_prediction import metadata_set
from nf_modules.media_scripts import (
    ControlInstruction,
    MediaScript,
    MediaScriptError,
    ScriptLibrary,
    parse_script,
)
from nf_modules.sdp import audio_address

__all__ = ["MODES", "MediaControl", "MediaInstruction", "ScriptFetchError", "ScriptFetcher", "check_mode"]

MODES = ("baseline", "refactored")


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`; ``ValueError`` naming the field otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r:.40}")
    return mode  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class MediaInstruction:
    """Send what arrives for ``side``'s UE to ``remote_host:remote_port``."""

    side: str
    remote_host: str
    remote_port: int


class ScriptFetchError(Exception):
    """A script could not be fetched (HTTP error status, connection failure, timeout)."""


class ScriptFetcher:
    """HTTP GET of media scripts with one aiohttp session (made lazily on the running loop)."""

    def __init__(self, *, timeout: float = 2.0, connections: int = 32) -> None:
        self.timeout = timeout
        self.connections = connections
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str) -> MediaScript:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.connections),
            )
        self.stats["http_requests"] += 1
        try:
            async with self._session.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    self.stats[f"http_{response.status}"] += 1
                    raise ScriptFetchError(f"GET {url}: HTTP {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.stats["http_failed"] += 1
            raise ScriptFetchError(f"GET {url}: {type(error).__name__} {error}") from None
        return parse_script(body)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class MediaControl:
    """See the module docstring. ``clock``: the MRFC's clock (for the service rate)."""

    def __init__(
        self,
        *,
        mode: str = "refactored",
        clock: Clock | None = None,
        fetcher: ScriptFetcher | None = None,
        capacity: float | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_depth: int = 4,
        default_library: ScriptLibrary | None = None,
    ) -> None:
        self.mode = check_mode(mode)
        self.clock = clock
        self.fetcher = fetcher or ScriptFetcher()
        self.rate = ServiceRate(capacity, queue_limit)
        self.max_depth = max_depth
        library = default_library or ScriptLibrary()
        #: scripts for calls the AS gave no URL for: the default library, no HTTP
        self._builtin = {name: parse_script(doc) for name, doc in library.documents.items()}
        self._builtin_root = library.root
        self.scripts: dict[str, str | None] = {}  # bridge id -> its root script URL
        self._cache: dict[tuple[str, str], MediaScript] = {}  # (bridge id, url), refactored mode
        self._inflight: dict[tuple[str, str], asyncio.Future[MediaScript]] = {}
        self.stats: Counter[str] = Counter()

    # -- SDP ----------------------------------------------------------------------------------

    @staticmethod
    def address_instructions(side: str, sdp: bytes) -> list[MediaInstruction]:
        """An SDP from the UE of ``side`` says where it receives; ``SdpError`` if unreadable."""
        host, port = audio_address(sdp)
        return [MediaInstruction(side, host, port)]

    # -- calls --------------------------------------------------------------------------------

    def register(self, bridge_id: str, script_url: str | None) -> None:
        """The call ``bridge_id`` runs the script at ``script_url`` (``None``: the built-in one)."""
        self.scripts[bridge_id] = script_url

    def forget(self, bridge_id: str) -> None:
        self.scripts.pop(bridge_id, None)
        for key in [k for k in self._cache if k[0] == bridge_id]:
            del self._cache[key]

    # -- metadata -----------------------------------------------------------------------------

    async def control_instructions(self, bridge_id: str, side: str, sets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``[{"instruction": {...}, "rule": name}]``, one per metadata set, in order.

        Raises ``ControlError``: ``not_found`` (unknown call), ``bad_args`` (bad sets),
        ``overloaded`` (queue full), ``script_failed`` (fetch or script error).
        """
        if bridge_id not in self.scripts:
            raise ControlError("not_found", f"no call {bridge_id!r} at this Media Control")
        if side not in ("A", "B"):
            raise ControlError("bad_args", f"side must be A or B, got {side!r:.20}")
        if not isinstance(sets, list) or not 1 <= len(sets) <= 64:
            raise ControlError("bad_args", "sets must be a list of 1 to 64 metadata sets")
        try:
            metadata = [metadata_set(s) if isinstance(s, Mapping) else metadata_set({}) for s in sets]
        except ValueError as error:
            raise ControlError("bad_args", str(error)) from None
        await self._serve(len(metadata))
        out = []
        for values in metadata:
            rule, instruction = await self._evaluate(bridge_id, side, values)
            out.append({"instruction": instruction.as_dict(), "rule": rule})
        self.stats["sets_evaluated"] += len(metadata)
        return out

    async def _serve(self, sets: int) -> None:
        """Wait for ``sets`` service slots of the emulated capacity (all or none admitted)."""
        if not self.rate.limited:
            return
        clock = self.clock
        assert clock is not None, "a limited MediaControl needs a clock"
        now = clock.now()
        if self.rate.queue_length(now) + sets > self.rate.queue_limit:
            self.rate.rejected += 1
            self.stats["overloaded"] += 1
            raise ControlError("overloaded", "Media Control queue is full")
        finish = now
        for _ in range(sets):
            admitted = self.rate.admit(now)
            assert admitted is not None  # room checked above
            finish = admitted
        if finish > now:
            done = asyncio.get_running_loop().create_future()
            handle = clock.call_at(finish, lambda: done.done() or done.set_result(None))
            try:
                await done
            finally:
                handle.cancel()

    async def _evaluate(self, bridge_id: str, side: str, values: Mapping[str, float]) -> tuple[str, ControlInstruction]:
        url = self.scripts.get(bridge_id)
        if url is None:
            return self._evaluate_builtin(side, values)
        for _ in range(self.max_depth):
            script = await self._script(bridge_id, url)
            rule, decision = script.decide(values, side)
            if isinstance(decision, ControlInstruction):
                return rule, decision
            url = urllib.parse.urljoin(url, decision.ref)
        self.stats["script_too_deep"] += 1
        raise ControlError("script_failed", f"more than {self.max_depth} scripts deep at {url}")

    def _evaluate_builtin(self, side: str, values: Mapping[str, float]) -> tuple[str, ControlInstruction]:
        name = self._builtin_root
        for _ in range(self.max_depth):
            rule, decision = self._builtin[name].decide(values, side)
            if isinstance(decision, ControlInstruction):
                return rule, decision
            name = decision.ref
        raise ControlError("script_failed", f"built-in scripts more than {self.max_depth} deep")

    async def _script(self, bridge_id: str, url: str) -> MediaScript:
        key = (bridge_id, url)
        if self.mode == "baseline":
            return await self._fetch(bridge_id, url)
        cached = self._cache.get(key)
        if cached is not None:
            self.stats["script_cache_hits"] += 1
            return cached
        pending = self._inflight.get(key)
        if pending is not None:  # the other flow of the call asked first: one GET for both
            self.stats["script_cache_hits"] += 1
            return await asyncio.shield(pending)
        task = self._inflight[key] = asyncio.ensure_future(self._fetch(bridge_id, url))
        task.add_done_callback(lambda done: self._inflight.pop(key, None) if self._inflight.get(key) is done else None)
        return await asyncio.shield(task)

    async def _fetch(self, bridge_id: str, url: str) -> MediaScript:
        try:
            script = await self.fetcher.fetch(url)
        except ScriptFetchError as error:
            self.stats["script_fetch_failed"] += 1
            raise ControlError("script_failed", str(error)) from None
        except MediaScriptError as error:
            self.stats["script_bad"] += 1
            raise ControlError("script_failed", f"{url}: {error}") from None
        self.stats["script_fetches"] += 1
        if self.mode == "refactored" and bridge_id in self.scripts:  # the call may have ended meanwhile
            self._cache[(bridge_id, url)] = script
        return script

    def get_stats(self) -> dict[str, int]:
        out = dict(self.stats)
        out.update({f"scripts_{k}": v for k, v in self.fetcher.stats.items()})
        out["media_calls"] = len(self.scripts)
        out["media_control_rejected"] = self.rate.rejected
        return out

    async def close(self) -> None:
        await self.fetcher.close()
