"""What every benchmark's command line shares: a --json flag, and its result printed
either as one JSON document or as aligned "name: value" lines."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the module docstring's first line, with --json."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def emit(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")
