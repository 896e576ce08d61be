"""WAV files for the UEs' media: G.711 mu-law <-> 16-bit PCM, 8 kHz mono.

A sending UE may take its audio from a WAV file (:func:`read_ulaw`); a receiving UE may write
what it got to one (:class:`WavRecorder`, :func:`write_ulaw`). Decoding and encoding use the
media core's G.711 functions (the ITU-T reference algorithm); the file itself is written by the
stdlib :mod:`wave` module. WAV samples are little-endian; the media core's 16-bit samples are in
the machine's byte order, so they are swapped on a big-endian host.

Runs wherever it is called (a UE actor's loop, a test); plain file I/O, no threads.
"""

from __future__ import annotations

import sys
import wave
from array import array
from pathlib import Path

from nf_modules.mediacore import lin16_to_ulaw, ulaw_to_lin16

__all__ = ["SAMPLE_RATE", "WavError", "WavRecorder", "pcm16_samples", "read_ulaw", "write_ulaw"]

SAMPLE_RATE = 8000  # G.711: 8 kHz, one byte per sample


class WavError(ValueError):
    """A WAV file a UE cannot send (the message names the file and what is wrong)."""


def _little_endian(native: bytes) -> bytes:
    if sys.byteorder == "little":
        return native
    samples = array("h", native)
    samples.byteswap()
    return samples.tobytes()


_native = _little_endian  # the swap is its own inverse


def read_ulaw(path: str | Path) -> bytes:
    """The audio of a 16-bit PCM, 8 kHz, mono WAV file, encoded as G.711 mu-law.

    Raises :class:`WavError` for a file that is not one (no resampling or mixing here)."""
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            if (channels, width, rate) != (1, 2, SAMPLE_RATE):
                raise WavError(
                    f"{path}: need 16-bit PCM, {SAMPLE_RATE} Hz, mono; got {8 * width}-bit, {rate} Hz, {channels} channel(s)"
                )
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise WavError(f"{path}: not a PCM WAV file ({error})") from None
    if not frames:
        raise WavError(f"{path}: holds no audio")
    return lin16_to_ulaw(_native(frames))


class WavRecorder:
    """A WAV file being written from G.711 mu-law payloads, appended as they are taken.

    ``append(ulaw)`` decodes and writes; ``close()`` finishes the header (idempotent);
    ``frames`` counts the samples written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames = 0
        self._writer: wave.Wave_write | None = wave.open(str(self.path), "wb")
        self._writer.setnchannels(1)
        self._writer.setsampwidth(2)
        self._writer.setframerate(SAMPLE_RATE)

    def append(self, ulaw: bytes) -> None:
        if self._writer is None:
            raise ValueError(f"{self.path}: recorder is closed")
        if ulaw:
            self._writer.writeframes(_little_endian(ulaw_to_lin16(ulaw)))
            self.frames += len(ulaw)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> WavRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_ulaw(path: str | Path, ulaw: bytes) -> Path:
    """Write G.711 mu-law audio to ``path`` as a 16-bit PCM 8 kHz mono WAV file."""
    with WavRecorder(path) as recorder:
        recorder.append(ulaw)
    return recorder.path


def pcm16_samples(path: str | Path) -> tuple[int, list[int]]:
    """``(sample_rate, samples)`` of a 16-bit mono WAV file (for checks and tests)."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
            raise WavError(f"{path}: not 16-bit mono")
        rate = reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    return rate, array("h", _native(frames)).tolist()
