"""Checking a client's JSON body against the shape its API documents, before anything reads it.

Owns: how a wrong body is told to the client: ``check_body`` runs the shape checker
(``_core.shapes``: ``Str``, ``Int``, ``Num``, ``Bool``, ``Arr``, ``Obj``, ``OneOf``, ``Tagged``,
compiled, re-exported here for the API modules that declare their shapes) and names the first
wrong field by its path in the caller's notation: OpenAI's ``messages[0].content[1].image_url.url``,
Anthropic's ``messages.0.content.1.source.data``. The rules of the walk are in
``_core/ref/shapes.py``, its pure-Python twin.
Must not touch: what the fields mean (``openai_api`` and ``anthropic_api`` declare the
shapes, from what the translators read), HTTP, the engine.
"""
from __future__ import annotations

from .._core.shapes import Arr, Bool, Int, Invalid, Num, Obj, OneOf, Shape, Str, Tagged
from ..errors import BadRequest

__all__ = ["ANY_OBJECT", "INT32_MAX", "Arr", "Bool", "Int", "Invalid", "Num", "Obj", "OneOf", "Shape", "Str", "Tagged",
           "anthropic_path", "check_body", "openai_path"]

INT32_MAX = 2**31 - 1

#: any object: its keys are not the gateway's business (a JSON schema, tool input, metadata)
ANY_OBJECT = Obj()


# ------------------------------------------------------------------ paths

def openai_path(path: list) -> str:
    """``["messages", 0, "content"]`` -> ``messages[0].content`` (OpenAI's ``param``)."""
    out = ""
    for part in path:
        out += f"[{part}]" if type(part) is int else (f".{part}" if out else str(part))
    return out


def anthropic_path(path: list) -> str:
    """``["messages", 0, "content"]`` -> ``messages.0.content`` (as Anthropic's errors name fields)."""
    return ".".join(str(part) for part in path)


def check_body(shape: Shape, body, notation, message: str) -> None:
    """Raise ``BadRequest`` naming the first wrong field of ``body``. ``notation`` turns the
    path into text; ``message`` is formatted with ``path`` and ``what``."""
    try:
        shape.check(body)
    except Invalid as e:
        e.path.reverse()
        if not e.path:
            raise BadRequest(f"The request body {e.what}.") from None
        path = notation(e.path)
        raise BadRequest(message.format(path=path, what=e.what), param=path) from None

