"""Python source read as a tree, for the tests that check the code's own layout."""

from __future__ import annotations

import ast
import gc


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` with the collector paused. On CPython 3.11.7 a collection inside
    the parse can run a finalizer (a socket another test left open, reported through
    pytest's warning hook, which parses source itself), and the nested parse fails
    the outer one with "AST constructor recursion depth mismatch" (CPython issue
    106905)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename)
    finally:
        if enabled:
            gc.enable()
