"""``cvlm demo``: the main job on the embedded default, ending in an HTML page a person can open."""

from __future__ import annotations

import html
from pathlib import Path

from cvlm.environment import describe_environment


def run_demo(out: str | Path) -> Path:
    """Run the demo into ``out`` and return the path of its ``index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in describe_environment().items()
    )
    index = out / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>cvlm demo</title>"
        f"<h1>cvlm demo</h1><table>{rows}</table>",
        encoding="utf-8",
    )
    return index
