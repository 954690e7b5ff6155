"""FAILURE_MODES #13 and #3: no module-level mutable state, no timer threads, no asyncio,
no unbounded channels, in any module of actors/ and app/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for d in ("actors", "app") for p in (ROOT / d).rglob("*.py"))
MUTABLE_CALLS = {"list", "dict", "set", "deque", "defaultdict", "OrderedDict", "Counter", "count",
                 "bytearray", "open_memory_channel", "Event", "Lock"}


def _mutable(node: ast.expr) -> bool:
    if isinstance(node, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in MUTABLE_CALLS
    return False


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_level_mutable_state(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    offenders = []
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is not None and _mutable(value):
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names != ["__all__"]:
                offenders.append(f"{path.name}:{node.lineno} {names}")
        if isinstance(node, ast.Global):
            offenders.append(f"{path.name}:{node.lineno} global")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            offenders.append(f"{path.name}:{node.lineno} global statement")
    assert not offenders


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_timer_threads_asyncio_or_unbounded_channels(path: Path) -> None:
    text = path.read_text()
    for banned in ("threading.Timer", "import asyncio", "from asyncio", "math.inf)", "float('inf'))",
                   'float("inf"))', "Thread("):
        assert banned not in text, f"{path.name} uses {banned}"
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "open_memory_channel":
            assert node.args, f"{path.name}:{node.lineno} open_memory_channel without a size"
            size = node.args[0]
            assert not (isinstance(size, ast.Attribute) and size.attr == "inf"), f"{path.name}:{node.lineno}"
