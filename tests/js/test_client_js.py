"""The JS client without a browser: its pure parts on node's test runner, its type
declarations checked by ``tsc`` on a TypeScript checkout, and its npm package.

Skipped with the reason when ``node`` (or this folder's TypeScript, from
``npm ci --prefix tests/js``) is missing, unless ``PAYLIVE_REQUIRE_NODE=1``, as in CI,
where a missing one fails. The browser tests in ``tests/browser`` drive the same code
against a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import paylive

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLIENT = ROOT / "client"
TSC = HERE / "node_modules" / ".bin" / "tsc"
REQUIRED = os.environ.get("PAYLIVE_REQUIRE_NODE") == "1"


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} (PAYLIVE_REQUIRE_NODE=1)")
    pytest.skip(what)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        _missing("node is not on PATH")
    return str(path)


def tsc() -> str:
    node()
    if not TSC.exists():
        _missing("TypeScript is not installed here: run `npm ci --prefix tests/js`")
    return str(TSC)


def run(args: list[str], cwd: Path = HERE) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited with {done.returncode}:\n{output}"
    return output


def node_tests(*paths: str) -> str:
    """Run node's test runner; it must have found and passed at least one test."""
    output = run([node(), "--test", *paths])
    passed = [line for line in output.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[-1].split()[-1]) > 0, f"no test ran:\n{output}"
    return output


def test_pure_parts_on_node() -> None:
    # Backoff, the retry prompt, seq order and resuming with `since`, the command queue.
    output = node_tests("unit/")
    assert "# fail 0" in output, output


@pytest.mark.parametrize("config", ["tsconfig.json", "tsconfig.node16.json"])
def test_typescript_checkout_type_checks(config: str) -> None:
    run([tsc(), "--noEmit", "-p", config])


def test_declarations_match_the_module() -> None:
    tsc()
    node_tests("exports.test.js")


def test_package_ships_the_module_and_its_types() -> None:
    npm = shutil.which("npm")
    if npm is None:
        _missing("npm is not on PATH")
    packed = json.loads(run([str(npm), "pack", "--dry-run", "--json", "--ignore-scripts"], CLIENT))
    files = {entry["path"] for entry in packed[0]["files"]}
    modules = {f"paylive/{p.name}" for p in (CLIENT / "paylive").glob("*.js")}
    assert files == {"package.json", "paylive.js", "paylive.d.ts"} | modules


def test_package_version_is_the_server_version() -> None:
    package = json.loads((CLIENT / "package.json").read_text())
    assert package["version"] == paylive.__version__
    assert package["types"] == package["exports"]["."]["types"] == "./paylive.d.ts"
    assert package["exports"]["."]["default"] == "./paylive.js"
    for name in ("paylive.js", "paylive.d.ts"):
        assert (CLIENT / name).is_file(), name
    assert package["license"] == "MIT"
