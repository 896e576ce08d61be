"""The hand-written stub of ``_mediaengine`` names exactly what the extension exposes.

(mypy's stubtest is not installed here; this checks names and method sets, which is what drifts.)
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from nf_modules.mediacore import _mediaengine, pure_engine, pure_packet

STUB = Path(_mediaengine.__file__).with_name("_mediaengine.pyi")


def stub_names() -> tuple[set[str], set[str]]:
    tree = ast.parse(STUB.read_text())
    top: set[str] = set()
    methods: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            methods |= {n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, methods


def test_stub_matches_the_extension() -> None:
    top, methods = stub_names()
    public = {n for n in dir(_mediaengine) if not n.startswith("_")}
    assert public == top - {"FullRule"}
    assert {n for n in dir(_mediaengine.Engine) if not n.startswith("_")} == methods


def test_pure_engine_has_the_same_methods() -> None:
    _, methods = stub_names()
    pure = {n for n, _ in inspect.getmembers(pure_engine.PureEngine, inspect.isfunction) if not n.startswith("_")}
    assert pure == methods
    assert pure_packet.DROP_REASONS == _mediaengine.DROP_REASONS
    assert pure_packet.MAX_PACKET == _mediaengine.MAX_PACKET
