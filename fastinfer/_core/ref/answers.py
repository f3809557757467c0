"""The reference for ``fastinfer._core.answers``: its own source, ``_core/answers.py``, run as plain
Python. The gateway uses the module compiled (with ``answers.pxd``'s types); this loads the same text
uncompiled, so ``tests/test_answers.py`` runs over both."""
from __future__ import annotations

from ._as_python import source_as_python

_module = source_as_python("answers")

AnswerRecorder = _module.AnswerRecorder

__all__ = ["AnswerRecorder"]
