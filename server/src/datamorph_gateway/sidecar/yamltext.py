"""A small YAML writer, so Envoy's rendered configuration reads like a hand-written one.

Only what the renderer produces: dicts, lists, strings, numbers and booleans. Strings that
YAML could misread are written as JSON strings (valid double-quoted YAML); multi-line
strings (the Lua source) as literal blocks. PyYAML would do, but is not a dependency of the
gateway, and Envoy takes JSON anyway; this keeps the file readable for operators.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["to_yaml"]

_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./@-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def _block(text: str) -> bool:
    """Whether `text` reads back unchanged from a literal block (``|`` or ``|-``)."""
    lines = text.removesuffix("\n").split("\n")
    return (
        len(lines) > 1
        and not text.endswith("\n\n")
        and not lines[0].startswith((" ", "\t"))
        and all(line == line.rstrip() and "\t" not in line and "\r" not in line for line in lines)
    )


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, item in items:
        prefix = f"{pad}{_scalar(key)}:" if key is not None else f"{pad}-"
        if isinstance(item, (dict, list)) and item:
            if key is None and isinstance(item, dict):
                nested: list[str] = []
                _emit(item, indent + 1, nested)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out.extend(nested[1:])
            else:
                out.append(prefix)
                _emit(item, indent + 1, out)
        elif isinstance(item, (dict, list)):
            out.append(f"{prefix} {'{}' if isinstance(item, dict) else '[]'}")
        elif isinstance(item, str) and _block(item):
            out.append(f"{prefix} {'|' if item.endswith(chr(10)) else '|-'}")
            inner = "  " * (indent + 1)
            out.extend(
                f"{inner}{line}" if line else "" for line in item.removesuffix("\n").split("\n")
            )
        else:
            out.append(f"{prefix} {_scalar(item)}")


def to_yaml(config: dict[str, Any]) -> str:
    """Block-style YAML for Envoy and for people: multi-line strings as literal blocks."""
    out: list[str] = []
    _emit(config, 0, out)
    return "\n".join(out) + "\n"
