"""Checks shared by the client APIs' body validators (``openai_api``, ``anthropic_api``).

Owns: the JSON type check of optional body fields and how the wanted types are
named in the error. Must not touch: the wording around it and the error shape
of each API (the validators pass their own message; the gateway renders the
``BadRequest`` in the caller's shape).
"""
from __future__ import annotations

from ..errors import BadRequest

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "an object"}


def type_names(types: tuple) -> str:
    """``(int, float)`` -> "a number", ``(str, list)`` -> "a string or an array"."""
    return " or ".join(_TYPE_NAMES[t] for t in types if not (t is int and float in types))


def check_optional_types(body: dict, types: dict[str, tuple], message: str) -> None:
    """Raise ``BadRequest`` (``param`` = the field) for the first field of ``types`` that
    ``body`` has, not null, of another JSON type. JSON ``true``/``false`` is a boolean
    only, never an integer or a number. ``message`` is formatted with ``key``, ``wanted``
    and ``got`` (the Python type name of the value)."""
    for key, allowed in types.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            raise BadRequest(message.format(key=key, wanted=type_names(allowed), got=type(value).__name__),
                             param=key)
