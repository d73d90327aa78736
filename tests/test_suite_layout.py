"""The suite's set-up has one home per fixture: a fixture name defined in two files is
two set-ups that drift apart (and, in a module, silently hides a conftest's)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from .support.source import parse

TESTS = Path(__file__).resolve().parent
# Files another tool owns: the JavaScript client's own unit tests.
OUTSIDE = (TESTS / "js" / "unit",)


def fixture_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name pytest knows the function by, if it is a fixture."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if not ast.unparse(target).endswith("fixture"):
            continue
        for keyword in call.keywords if call else []:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
        return node.name
    return None


def fixtures() -> dict[str, list[str]]:
    """Every fixture name defined in the suite, with where (file:line) each time."""
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if any(path.is_relative_to(outside) for outside in OUTSIDE):
            continue
        tree = parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = fixture_name(node)
                if name is not None:
                    where = f"{path.relative_to(TESTS.parent)}:{node.lineno}"
                    found.setdefault(name, []).append(where)
    return found


def test_no_fixture_is_defined_twice() -> None:
    twice = {name: places for name, places in fixtures().items() if len(places) > 1}
    assert not twice, (
        "a fixture is defined in more than one place; move it to the conftest.py of the "
        "tier that uses it (tests/conftest.py if several do), and let modules that need "
        f"another variant declare it (SERVER_ENV, ...) or use a name of its own: {twice}"
    )


def test_the_check_sees_fixtures() -> None:
    # The check must be able to fail: it finds the suite's shared fixtures at all, and
    # reads a fixture's name= as its name.
    found = fixtures()
    assert found["server"] == [found["server"][0]] and "tests/conftest.py" in found["server"][0]
    tree = ast.parse("@pytest.fixture(name='b')\ndef a(): ...\n@pytest.fixture\ndef c(): ...")
    names = [fixture_name(n) for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert names == ["b", "c"]


def test_a_files_tests_run_on_one_process() -> None:
    # xdist's own grouping once stopped working silently (pytest 9 ignores the node id
    # it rewrites), and each module's servers were started on every process: the
    # suite's scheduler (tests/conftest.py) is checked on two small files.
    files = ["tests/unit/test_limit.py", "tests/load/test_restart_report.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *files],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers: dict[str, set[str]] = {}
    for worker, path in re.findall(r"^\[(gw\d+)\].* PASSED (\S+?)::", done.stdout, re.M):
        workers.setdefault(path, set()).add(worker)
    assert set(workers) == set(files), done.stdout
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
