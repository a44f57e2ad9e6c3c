"""Where the bundled phantom-world models live, and how a name or a path resolves to a folder.

Bundled weights ship inside the package (``cvlm/bundled/<kind>/<name>/``, Hugging Face folder layout:
``config.json`` + safetensors). They know only the synthetic phantom world.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_ROOT = Path(__file__).resolve().parent / "bundled"
KINDS = ("generators", "diffusion")


def bundled_names(kind: str) -> list[str]:
    """Names of the bundled models of one kind (``"generators"`` or ``"diffusion"``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    folder = BUNDLED_ROOT / kind
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").exists())
        if (folder.is_dir())
        else []
    )


# What one model of each kind is called in messages.
_NOUNS = {"generators": "report generator", "diffusion": "diffusion model"}


def resolve_model(name_or_path: str | Path, kind: str) -> Path:
    """Resolve a bundled name (e.g. ``"phantom-captioner"``) or a local folder to a folder path.

    Raises:
        FileNotFoundError: If it is neither a bundled name nor an existing folder.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    candidate = BUNDLED_ROOT / kind / str(name_or_path)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
        f"{name_or_path!s} is neither a local folder nor a bundled {_NOUNS.get(kind, kind)} "
        f"(bundled: {', '.join(bundled_names(kind)) or 'none'})."
    )
