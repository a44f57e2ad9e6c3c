"""What a bug report needs: versions, device, where bundled models live (``cvlm env``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from cvlm import __version__
from cvlm.bundled import BUNDLED_ROOT, bundled_names


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


RECORDED_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "numpy",
    "pillow",
    "opencv-python-headless",
)
"""Packages whose versions every explanation records: the ones its numbers depend on."""


def versions() -> dict[str, str]:
    """Versions of cvlm, Python and the packages an explanation's numbers depend on (no device, no paths).

    Example:
        >>> sorted(versions())[:3]
        ['accelerate', 'cvlm', 'diffusers']
    """
    return {
        "cvlm": __version__,
        "python": platform.python_version(),
        **{p: _version(p) for p in RECORDED_PACKAGES},
    }


def describe_environment() -> dict[str, str]:
    """Versions of cvlm and its main dependencies, the compute device and the bundled models."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    info = {
        "cvlm": __version__,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
        "OpenMP wait policy": os.environ.get("OMP_WAIT_POLICY", "not set (libgomp spins before it sleeps)"),
    }
    for package in ("diffusers", "transformers", "accelerate", "safetensors", "pydicom", "numpy", "gradio"):
        info[package] = _version(package)
    info["bundled models"] = str(BUNDLED_ROOT)
    info["bundled generators"] = ", ".join(bundled_names("generators")) or "none"
    info["bundled diffusion models"] = ", ".join(bundled_names("diffusion")) or "none"
    return info
