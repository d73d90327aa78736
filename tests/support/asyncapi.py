"""The WebSocket protocol's description (docs/asyncapi.yaml), and a check that a
message received fits it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

DOCUMENT = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml").read_text()
)


def check(message: dict[str, Any], channel: str) -> None:
    """``message`` fits the payload schema its type has on ``channel`` (``customer`` or
    ``admin``: a ``state`` is not the same on both, protocol 4.1). The event stream and
    the long-poll carry a channel's messages too (protocol 4.2)."""
    key = message["type"].replace(".", "_")
    described = DOCUMENT["channels"][channel]["messages"]
    assert key in described, f"{message['type']} is not described on the {channel} channel"
    schema = {**DOCUMENT, "$ref": f"{described[key]['$ref']}/payload"}
    Draft202012Validator(schema).validate(message)
