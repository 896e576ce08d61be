"""Type stubs for the native media engine (``_mediaengine.c`` + ``engine_core.c``).

Use :class:`nf_modules.mediacore.engine.MediaEngine`; this is the raw tuple/dict interface it
wraps (shared with :class:`nf_modules.mediacore.pure_engine.PureEngine`).
"""

from collections.abc import Sequence
from typing import Any

from _typeshed import ReadableBuffer

#: Drop reasons, in the order of ``enum mc_drop``; also the drop keys of ``stats()``.
DROP_REASONS: tuple[str, ...]
MAX_PACKET: int
HIST_BUCKETS: int

#: (action, dest_host | None, dest_port, out_fd (-1: the flow's own socket), transcode,
#: ptime_ms (0: keep), payload_type (-1: keep), version)
FullRule = tuple[int, str | None, int, int, int, int, int, int]

class Engine:
    def __init__(
        self, batch: int = 32, metadata_interval: float = 0.1, hold_limit: int = 256, recording_limit: int = 480000
    ) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def add_flow(self, flow_id: int, fd: int, rule: FullRule, hold_on_metadata: bool, record: bool, /) -> None: ...
    def remove_flow(self, flow_id: int, /) -> dict[str, Any]: ...
    def set_instructions(self, items: Sequence[tuple[int, FullRule]], /) -> None: ...
    def release(self, flow_id: int, /) -> None: ...
    #: counters, ``latency_*_ms`` percentiles and ``latency_buckets``: the latency histogram's
    #: non-empty buckets as ``[(low_us, high_us, count), ...]`` (bounds inclusive, ascending)
    def flow_stats(self, flow_id: int, /) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def fileno(self) -> int: ...
    def drain_metadata(self) -> list[tuple[Any, ...]]: ...
    def take_recording(self, flow_id: int, /) -> bytes: ...
    def add_generator(
        self,
        gen_id: int,
        fd: int,
        host: str,
        port: int,
        payload: ReadableBuffer,
        payload_type: int,
        ssrc: int,
        ptime_ms: int,
        stamp: bool,
        count: int,
        /,
    ) -> None: ...
    def remove_generator(self, gen_id: int, /) -> dict[str, int]: ...
    def generator_stats(self, gen_id: int, /) -> dict[str, int]: ...

def process(
    packets: Sequence[tuple[ReadableBuffer, int]], rule: tuple[int, int, int, int], record: bool, recording_limit: int, /
) -> tuple[list[bytes], dict[str, Any]]: ...
def hist_index(us: int, /) -> int: ...
