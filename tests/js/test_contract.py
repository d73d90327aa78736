"""The client's hand-written names held to the protocol's sources of truth.

``client/paylive.d.ts`` and the constants of ``client/paylive.js`` are written by hand;
these tests read the same names from where the server takes them
(``paylive.core.protocol``'s enums, the core's and the sandbox's constants) and from
the contract (``docs/asyncapi.yaml``, ``docs/openapi.json``), and fail when the client
misses one or adds one. The declarations are read as text (their string-literal
unions); the module's constants as node imports them.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import yaml

from paylive.core import effects, protocol, session
from paylive.gateway.sandbox import TEST_CARDS
from paylive.web.errors import HTTP_STATUS

from .test_client_js import CLIENT, ROOT, node, run

DOCS = ROOT / "docs"
DECLARATIONS = CLIENT / "paylive.d.ts"


@cache
def unions() -> dict[str, set[str]]:
    """Every ``export type Name = 'a' | 'b' ...;`` of the declarations whose members are
    all string literals, as {Name: {'a', 'b'}}."""
    text = DECLARATIONS.read_text()
    found = {}
    for name, body in re.findall(r"export type (\w+)\s*=\s*([^;]*);", text):
        members = [m.strip() for m in body.split("|") if m.strip()]
        if members and all(re.fullmatch(r"'[^']*'", m) for m in members):
            found[name] = {m.strip("'") for m in members}
    return found


def union(name: str) -> set[str]:
    assert name in unions(), f"paylive.d.ts declares no string union {name}"
    return unions()[name]


def message_types(pattern: str) -> set[str]:
    """The first type argument of every ``Message<'type', ...>`` (or ``type: 'x'`` in a
    command) in the declarations."""
    return set(re.findall(pattern, DECLARATIONS.read_text()))


@cache
def module() -> dict[str, Any]:
    """paylive.js's constants as node imports them: Sets as lists, Maps as pairs."""
    script = (
        f"import * as c from {json.dumps((CLIENT / 'paylive.js').as_uri())};"
        "const plain = (v) => v instanceof Set ? [...v] : v instanceof Map ? [...v] : v;"
        "const out = {};"
        "for (const [k, v] of Object.entries(c)) if (typeof v !== 'function') out[k] = plain(v);"
        "out.SERVICE_RESTART = (await import("
        f"{json.dumps((CLIENT / 'paylive' / 'backoff.js').as_uri())})).SERVICE_RESTART;"
        "console.log(JSON.stringify(out));"
    )
    return dict(json.loads(run([node(), "--input-type=module", "-e", script])))


@cache
def asyncapi() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCS / "asyncapi.yaml").read_text()))


def asyncapi_types(operation: str) -> set[str]:
    """The ``type`` of every message of one AsyncAPI operation."""
    spec = asyncapi()
    types = set()
    for ref in spec["operations"][operation]["messages"]:
        channel, name = ref["$ref"].removeprefix("#/channels/").split("/messages/")
        message_ref = spec["channels"][channel]["messages"][name]["$ref"]
        message = spec["components"]["messages"][message_ref.rsplit("/", 1)[1]]
        types.add(message["payload"]["properties"]["type"]["const"])
    return types


def asyncapi_state_enum(field: str) -> set[str]:
    data = asyncapi()["components"]["messages"]["state"]["payload"]["properties"]["data"]
    return set(data["properties"][field]["enum"])


def values(enum: Any) -> set[str]:
    return {str(member) for member in enum}


# ---------------------------------------------------------------------------------
# The declarations (paylive.d.ts)


def test_statuses_are_the_protocols() -> None:
    assert union("SessionStatus") == values(protocol.Status)
    assert union("ActiveStatus") == values(protocol.ACTIVE_STATUSES)
    assert union("TerminalStatus") == values(protocol.TERMINAL_STATUSES)
    assert union("AttemptStatus") == values(protocol.AttemptStatus)
    schemas = asyncapi()["components"]["schemas"]
    assert set(schemas["Session"]["properties"]["status"]["enum"]) == values(protocol.Status)
    assert set(schemas["Attempt"]["properties"]["status"]["enum"]) == values(protocol.AttemptStatus)


def test_interruption_reasons_and_causes_are_the_protocols() -> None:
    assert union("InterruptionReason") == set(session.INTERRUPTION_REASONS)
    reasons = asyncapi()["components"]["schemas"]["LastError"]["properties"]["reason"]["enum"]
    assert set(reasons) == set(session.INTERRUPTION_REASONS)
    assert union("StateCause") == asyncapi_state_enum("cause")


def test_server_error_codes_are_the_protocols() -> None:
    # Every code of ErrorCode, and `error` (an HTTP error no route answered, in openapi).
    openapi = json.loads((DOCS / "openapi.json").read_text())
    error = openapi["components"]["schemas"]["Error"]["properties"]["error"]
    documented = set(error["properties"]["code"]["enum"])
    assert values(protocol.ErrorCode) <= documented
    assert union("ServerErrorCode") == documented
    socket = asyncapi()["components"]["messages"]["error"]["payload"]["properties"]["data"]
    assert set(socket["properties"]["code"]["enum"]) <= values(protocol.ErrorCode)


def test_message_types_are_the_asyncapis() -> None:
    server = message_types(r"Message<\s*'([\w.]+)'")
    assert server == asyncapi_types("receiveCustomerMessages") | asyncapi_types("receiveAdminFeed")
    commands = message_types(r"\{ type: '(\w+)'")
    assert commands == asyncapi_types("sendCustomerCommands") | asyncapi_types("sendAdminPing")


def test_effect_kinds_are_the_cores() -> None:
    assert union("EffectKind") == set(effects.KINDS)


# ---------------------------------------------------------------------------------
# The module's constants (paylive.js), read by node


def test_module_statuses_and_types_are_the_protocols() -> None:
    constants = module()
    assert set(constants["TERMINAL_STATUSES"]) == values(protocol.TERMINAL_STATUSES)
    assert set(constants["ACTIVE_STATUSES"]) == values(protocol.ACTIVE_STATUSES)
    assert set(constants["DURABLE_TYPES"]) == set(protocol.DURABLE_TYPES)
    assert constants["JSON_PROTOCOL"] == protocol.JSON
    assert f"JSON_PROTOCOL: '{protocol.JSON}'" in DECLARATIONS.read_text()
    assert set(constants["OUTCOME_UNKNOWN_REASONS"]) == values(session.OUTCOME_UNKNOWN)


def test_module_close_codes_are_the_protocols() -> None:
    constants = module()
    fatal = dict(constants["FATAL_CLOSE_CODES"])
    # The server's own refusals (4xxx) and a policy violation end a connection for good;
    # going away, too big, restarting and try later are worth a reconnect.
    assert set(fatal) == {int(c) for c in protocol.CloseCode if c >= 4000} | {
        int(protocol.CloseCode.POLICY)
    }
    # Each fatal close becomes an error code the declarations name.
    assert set(fatal.values()) <= union("ClientErrorCode")
    assert constants["SERVICE_RESTART"] == protocol.CloseCode.SERVICE_RESTART
    assert constants["TRANSPORTS"] == ["websocket", "sse", "polling"]
    assert set(constants["TRANSPORTS"]) == union("Transport")


def test_module_sandbox_cards_are_the_sandboxs() -> None:
    numbers = [card["number"] for card in module()["SANDBOX_CARDS"]]
    assert len(numbers) == len(set(numbers))
    # The demo offers the sandbox's cards but the two that only tests need (a void lost
    # on its way, a provider that hangs for ten minutes).
    assert set(numbers) == set(TEST_CARDS) - {"4000000000000341", "4000000000000606"}


def test_module_reads_the_restart_reason_of_the_protocol() -> None:
    # Section 4.3: a draining worker closes with 1012 and this reason; the client draws
    # its reconnect delay in [0, n) from it, and ignores it on any other close.
    contract = (DOCS / "protocol.md").read_text()
    assert "`restarting; reconnect_within_ms=<n>`" in contract
    reason = "restarting; reconnect_within_ms=2000"
    backoff = json.dumps((CLIENT / "paylive" / "backoff.js").as_uri())
    script = (
        f"import {{ restartDelay }} from {backoff};"
        f"const r = {json.dumps(reason)};"
        "console.log(JSON.stringify([restartDelay(1012, r, () => 0.5),"
        " restartDelay(1012, r, () => 0.9999), restartDelay(1001, r, () => 0.5)]));"
    )
    delays = json.loads(run([node(), "--input-type=module", "-e", script]))
    assert delays == [1000, 1999, None]
    assert protocol.CloseCode.SERVICE_RESTART == 1012


def test_http_commands_know_paylives_own_503s() -> None:
    # A 503 to a command over HTTP is paylive's own answer only with one of these codes
    # in its JSON error (a refusal, but for `engine_unavailable` to a pay or retry, whose
    # save may have been made: commands.js); any other 502, 503 or 504 is a proxy's, and
    # the command's outcome is unknown. paylive answers no command 502 or 504.
    http = json.dumps((CLIENT / "paylive" / "http.js").as_uri())
    script = (
        f"import {{ UNAVAILABLE_CODES }} from {http};"
        "console.log(JSON.stringify([...UNAVAILABLE_CODES]));"
    )
    codes = set(json.loads(run([node(), "--input-type=module", "-e", script])))
    # A stopping worker's 503 cut a command that may have been applied (protocol 4.3):
    # not a refusal, and a pay so answered is of unknown outcome.
    maybe_applied = {"shutting_down"}
    assert (
        codes
        == {str(code) for code, status in HTTP_STATUS.items() if status == 503} - maybe_applied
    )
    assert not set(HTTP_STATUS.values()) & {502, 504}


def test_the_docs_say_the_http_command_defaults_of_the_client() -> None:
    # protocol 4.2 and docs/client.md state the bounds of an HTTP command in words; the
    # client's defaults moved (requestTimeout 15 s to 20 s) and the protocol kept the old one.
    http = json.dumps((CLIENT / "paylive" / "http.js").as_uri())
    script = (
        f"import {{ HTTP_COMMAND_DEFAULTS }} from {http};"
        "console.log(JSON.stringify(HTTP_COMMAND_DEFAULTS));"
    )
    defaults = json.loads(run([node(), "--input-type=module", "-e", script]))
    for doc in ("protocol.md", "client.md"):
        text = " ".join((DOCS / doc).read_text().split())
        said = {
            "requestTimeout": re.findall(r"`requestTimeout` \((\d+) s", text),
            "resendDelay": re.findall(r"`resendDelay` \((\d+) s\)", text),
            "resends": re.findall(r"at most `resends` times \((\d+)\)", text),
        }
        assert all(said.values()), f"{doc} no longer states every default: {said}"
        assert {name: {int(v) for v in found} for name, found in said.items()} == {
            "requestTimeout": {defaults["requestTimeout"] // 1000},
            "resendDelay": {defaults["resendDelay"] // 1000},
            "resends": {defaults["resends"]},
        }, doc
