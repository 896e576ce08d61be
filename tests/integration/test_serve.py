"""``run.py serve`` end to end: one and two processes, a call placed from outside, clean stop."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors import Runtime
from nf_modules.user_agent import UserAgent

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0


def free_ports(n: int) -> list[int]:
    """``n`` UDP ports that are free right now (held until all are chosen, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def topology_on_free_ports(source: str, tmp_path: Path) -> Path:
    """A copy of a shipped topology with every module on a free port (the UE pool: 100 users)."""
    text = (ROOT / "topologies" / source).read_text()
    ports = iter(free_ports(text.count("\nport = ")))
    text = re.sub(r"\nport = \d+", lambda _: f"\nport = {next(ports)}", text)
    text = text.replace("users = 1000", "users = 100")
    path = tmp_path / source
    path.write_text(text)
    return path


def start_serve(topology: Path, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, int], list[str]]:
    command = [sys.executable, "run.py", "serve", "--topology", str(topology), "--duration", "120", *extra]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line.rstrip())
        if line.strip() == "READY":
            break
    else:
        raise AssertionError(f"serve exited early: {process.wait()} {lines} {process.stderr.read()}")  # type: ignore[union-attr]
    match = re.search(r"P-CSCF at ([\d.]+):(\d+)", "\n".join(lines))
    assert match, lines
    return process, (match.group(1), int(match.group(2))), lines


def call_through(pcscf: tuple[str, int]) -> tuple[int, int]:
    with Runtime(name="serve-test-client").make_default():
        caller = UserAgent.start("outside", "ue0001").proxy()
        result = caller.call("ue0002", pcscf, timeout=20).get(timeout=WAIT)
    return result.status, result.bye_status


@pytest.mark.parametrize("topology", ["default.toml", "two_process.toml"])
def test_serve_answers_calls_and_stops_cleanly(topology: str, tmp_path: Path) -> None:
    path = topology_on_free_ports(topology, tmp_path)
    process, pcscf, lines = start_serve(path, "--json")
    try:
        assert any("ue_pool: {'users': 100, 'registered': 100" in line for line in lines), lines
        assert any(line.strip().startswith("sipp -sn uac") for line in lines)
        assert call_through(pcscf) == (200, 200)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["pcscf"]["dialogs"]["Morgue"] == 1
    assert stats["ue_pool"]["calls_answered_in"] == 1
    if topology == "two_process.toml":
        assert "as_media_policy" not in stats  # ran in the other process


def test_serve_refuses_an_unknown_placement_group(tmp_path: Path) -> None:
    path = topology_on_free_ports("two_process.toml", tmp_path)
    done = subprocess.run(
        [sys.executable, "run.py", "serve", "--topology", str(path), "--process", "nowhere"],
        cwd=ROOT, capture_output=True, text=True, timeout=WAIT, check=False,
    )
    assert done.returncode == 2 and "nowhere" in done.stderr
