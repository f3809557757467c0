"""How a standalone bench module (``python -m bench.cluster``, ``bench.instructions``) ends: its table
on standard output, its report as JSON where ``--out`` says."""
from __future__ import annotations

import json
from pathlib import Path


def finish(markdown: str, report: dict, out: str | None) -> int:
    """Print the table, write the report; the module's exit status."""
    print(markdown)
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
    return 0
