"""The layers of docs/architecture.md, held against the imports of every module.

``LAYERS`` is the one list of the order, top to bottom: a module may import its own
package and any package of a layer below its own, never one above it nor a peer of
its own layer. Every import counts: ``import paylive.x``, ``from paylive.x import``,
relative ones (``from ..x import``), and those inside functions or under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.source import parse

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "paylive"

# Top to bottom; the names in one tuple are peers (neither imports the other).
# "paylive" is the package's own __init__ (its version); a module is a package of one.
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("server",),
    ("web", "load"),
    ("runtime",),
    ("fanout", "service", "limits"),
    ("gateway",),
    ("engine", "archive"),
    ("metrics", "telemetry"),
    ("settings",),
    ("core",),
    ("errors", "paylive"),
]

# What some packages may take from the ones below them, besides the order (the
# claims of docs/architecture.md that the order alone does not make true).
ONLY = {
    # load/ speaks the protocol over the wire: the vocabulary and the exception root,
    # and reads a secret the server also reads (the metrics token) as the server does.
    "load": {"core.protocol", "errors", "settings"},
}
# The packages that call the engine (they import more of it than its exception).
ENGINE_CALLERS = {"service", "fanout", "runtime", "gateway"}


def _rank() -> dict[str, int]:
    return {name: depth for depth, peers in enumerate(LAYERS) for name in peers}


def package_of(path: Path) -> tuple[str, list[str]]:
    """The layer a source file is in (its top package, or the module itself), and the
    package it sits in (what ``from .`` means there)."""
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ("paylive" if parts == ["__init__"] else parts[0]), parts[:-1]


def imports(
    path: Path, source: str | None = None
) -> Iterator[tuple[int, list[str], tuple[str, ...]]]:
    """Every import of paylive by ``path``: its line, the module (its parts after
    ``paylive``) and the names taken from it. ``source`` stands in for the file."""
    _, package = package_of(path)
    tree = parse(source if source is not None else path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "paylive":
                    yield node.lineno, parts[1:], ("*",)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "paylive":
                    yield node.lineno, parts[1:], names
                continue
            # ``from .`` is the module's own package; each further dot one up.
            up = node.level - 1
            assert up <= len(package), f"{path}:{node.lineno} imports above paylive"
            module = package[: len(package) - up]
            yield node.lineno, module + (node.module.split(".") if node.module else []), names


def layers_of(module: list[str], names: tuple[str, ...]) -> set[str]:
    """The layers an import reaches: ``from paylive import metrics`` reaches metrics."""
    if module:
        return {module[0]}
    return {name if name in _rank() else "paylive" for name in names}


def violations(path: Path, source: str | None = None) -> list[str]:
    rank = _rank()
    top, _ = package_of(path)
    assert top in rank, f"{path} is in no layer: add its package to LAYERS"
    found = []
    for line, module, names in imports(path, source):
        dotted = ".".join(module)
        where = f"{path.relative_to(ROOT)}:{line} ({top}) imports paylive.{dotted} {names}"
        for other in layers_of(module, names) - {top}:
            if rank[other] < rank[top]:
                found.append(f"{where}: {other} is a layer above")
            elif rank[other] == rank[top]:
                found.append(f"{where}: {other} is a peer of its layer")
        allowed = ONLY.get(top)
        if allowed is not None and module[:1] != [top] and dotted not in allowed:
            found.append(f"{where}: outside what {top} may take ({sorted(allowed)})")
    return found


SOURCES = sorted(SOURCE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    tops = {package_of(path)[0] for path in SOURCES}
    assert tops == set(_rank()), "LAYERS names exactly the packages of src/paylive"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_only_go_down(path: Path) -> None:
    assert violations(path) == []


def test_the_engine_is_called_by_the_layers_the_architecture_names() -> None:
    # Above the engine, the others take only its exception (web/) or the parser of a
    # Redis URL (server/preflight.py checks it before anything starts).
    callers = set()
    for path in SOURCES:
        top, _ = package_of(path)
        for _, module, names in imports(path):
            if top != "engine" and module[:1] == ["engine"]:
                if set(names) - {"EngineUnavailable", "split_url"}:
                    callers.add(top)
    assert callers == ENGINE_CALLERS


def test_the_edge_never_calls_the_engine_itself() -> None:
    # Routes and sockets hand ``runtime.engine`` to the service at most; a call of one
    # of its methods (``runtime.engine.get(...)``) from web/ or server/ fails.
    calls = []
    for path in SOURCES:
        if package_of(path)[0] not in {"web", "server"}:
            continue
        for node in ast.walk(parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "engine"
            ):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []


def test_runtime_imports_nothing_from_the_edge() -> None:
    runtime = SOURCE / "runtime.py"
    reached = set().union(*(layers_of(m, n) for _, m, n in imports(runtime)))
    assert reached & {"web", "server"} == set()


def test_the_core_is_pure_of_settings() -> None:
    # The machine's rules are a value (core.decision.Rules); settings build them.
    for path in (SOURCE / "core").rglob("*.py"):
        for _, module, names in imports(path):
            assert "settings" not in layers_of(module, names), path


# The modules that may take ``Settings`` whole: the wiring, which hands every component
# below it its part (``settings.engine``, ``settings.redis``, ... in settings.py).
# Anything else that reads a setting takes its part, so that what a component depends
# on is its signature (docs/architecture.md, "Settings").
WIRING = {
    "settings.py",  # the table itself, and where each part is made from it
    "runtime.py",  # one worker's parts wired together; its loops' timings are its own
    "engine/__init__.py",  # create_engine: memory or Redis, each given its part
    "gateway/__init__.py",  # create_gateway: the sandbox or Stripe, each given its part
    "server/app.py",  # the ASGI app: CORS, the door, telemetry and the runtime
    "server/cli.py",  # paylive serve: the banner, the secrets it prints, uvicorn's options
    "server/connections.py",  # outside paylive serve, uvicorn's protocol takes the defaults
    "server/preflight.py",  # paylive check: every dependency the settings name, in turn
}
# What only the wiring takes from settings.py: the whole, and what reads it whole.
WHOLE = {"Settings", "load_settings", "machine_rules", "*"}


def takes_settings_whole(path: Path, source: str | None = None) -> list[str]:
    """The imports by ``path`` of the settings as a whole, rather than of a part."""
    found = []
    for line, module, names in imports(path, source):
        whole = set(names) & WHOLE if module == ["settings"] else set()
        if not module and "settings" in names:
            whole = {"settings"}  # the module itself: ``settings.Settings`` is in reach
        if whole:
            found.append(f"{path.relative_to(ROOT)}:{line} takes {sorted(whole)}")
    return found


def test_components_take_their_part_of_the_settings() -> None:
    # Web routes read ``runtime.settings`` (the runtime is what the wiring gives them);
    # what they hand down (web/auth.py, web/admission.py) is a part.
    outside = [path for path in SOURCES if str(path.relative_to(SOURCE)) not in WIRING]
    assert len(outside) + len(WIRING) == len(SOURCES), "WIRING names a module that is gone"
    assert [line for path in outside for line in takes_settings_whole(path)] == []
    # And the list is no longer than it must be: each of the wiring still takes it.
    idle = [name for name in WIRING - {"settings.py"} if not takes_settings_whole(SOURCE / name)]
    assert idle == [], "WIRING names modules that no longer take Settings whole"


def test_the_settings_check_can_fail() -> None:
    engine = SOURCE / "engine" / "memory.py"
    assert takes_settings_whole(engine, "from ..settings import EngineSettings\n") == []
    assert takes_settings_whole(engine, "from ..settings import Settings\n") != []
    typing = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import settings\n"
    assert takes_settings_whole(engine, typing) != []
    assert takes_settings_whole(engine, "import paylive.settings\n") != []


def test_the_check_catches_an_upward_import() -> None:
    # The check must be able to fail: runtime.py as it was (importing the door and
    # the token buckets from web/), a relative import inside a function, and one
    # under TYPE_CHECKING.
    runtime = SOURCE / "runtime.py"
    old = "from .web.admission import Admission\nfrom .web.ratelimit import TokenBuckets\n"
    assert len(violations(runtime, old)) == 2
    inside = "def f() -> None:\n    from ..service import payments\n"
    assert violations(SOURCE / "engine" / "base.py", inside) != []
    typing = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .web import routes\n"
    assert violations(runtime, typing) != []
    assert violations(SOURCE / "service" / "reads.py", "from ..fanout import hub\n") != []


def test_the_architecture_names_the_layers_in_this_order() -> None:
    # docs/architecture.md's layout lists the packages top to bottom: the same order.
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("## Layout") :]
    named = re.findall(r"^  ([a-z_]+)(?:/|\.py)\s", layout, flags=re.MULTILINE)
    rank = _rank()
    ranks = [rank[name] for name in named if name in rank]
    assert ranks == sorted(ranks), f"docs/architecture.md lists {named}"
    assert {name for name in named if name in rank} == set(rank) - {"__main__", "paylive"}


def test_the_exception_tree_names_each_exception_where_it_is_defined() -> None:
    # errors.py draws every PayliveError with the module that defines it: each line
    # must be true, and no exception may be left out of the drawing.
    drawing = (SOURCE / "errors.py").read_text().split('"""')[1]
    drawn = {
        name: module for name, module in re.findall(r"[├└]── (\w+)\s.*\((paylive[\w.]*)\)", drawing)
    }
    defined: dict[str, str] = {}
    roots = {"PayliveError", "Refused"}
    grew = True
    while grew:  # the classes deriving from the root, and from those, and so on
        grew = False
        for path in SOURCES:
            for node in ast.walk(parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name not in defined:
                    bases = {base.id for base in node.bases if isinstance(base, ast.Name)}
                    if bases & (roots | set(defined)) and path.name != "errors.py":
                        parts = path.relative_to(SOURCE).with_suffix("").parts
                        defined[node.name] = ".".join(("paylive", *parts))
                        grew = True
    assert set(drawn) == set(defined)
    for name, module in drawn.items():
        home = defined[name]
        assert home == module or home.startswith(module + "."), f"{name} is in {home}"
