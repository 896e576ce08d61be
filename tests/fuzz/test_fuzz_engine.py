"""Bounded, seeded fuzzing of the media engine's per-packet C core under ASan + UBSan.

The harness (fuzz_engine.c) is compiled here with gcc, without make, and run for a few seconds;
any sanitizer report aborts it and fails the test.  A planted out-of-bounds read
(-DMC_FUZZ_SELFTEST) proves that a report does fail it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CORE = HERE.parents[1] / "nf_modules" / "mediacore"
SECONDS = float(os.environ.get("MEDIA_FUZZ_SECONDS", "8"))
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the fuzz harness")


def build(out: Path, *defines: str) -> Path:
    cmd = ["gcc", "-std=c11", "-O1", "-g", *SANITIZERS, *defines, f"-I{CORE}",
           str(HERE / "fuzz_engine.c"), str(CORE / "engine_core.c"), "-lm", "-o", str(out)]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return out


def run(binary: Path, seed: int, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), str(seed), str(seconds)], capture_output=True, text=True,
                          timeout=seconds + 60, env=ENV)  # fmt: skip


@pytest.mark.timeout(180)
def test_engine_core_survives_fuzzing_under_sanitizers(tmp_path: Path) -> None:
    binary = build(tmp_path / "fuzz_engine")
    result = run(binary, seed=20261122, seconds=SECONDS)
    report = result.stderr[-4000:]
    assert result.returncode == 0, report
    assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr, report
    assert int(result.stdout.split()[-1]) > 10_000  # it really ran


@pytest.mark.timeout(120)
def test_a_sanitizer_report_fails_the_run(tmp_path: Path) -> None:
    binary = build(tmp_path / "fuzz_selftest", "-DMC_FUZZ_SELFTEST")
    result = run(binary, seed=1, seconds=0.5)
    assert result.returncode != 0 and "AddressSanitizer" in result.stderr
