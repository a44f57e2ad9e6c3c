"""Callable adapter: a Python function ``f(images: list[np.ndarray]) -> list[str]``.

Images arrive in the xray convention (float32 ``(H, W)`` in ``[0, 1]``, any size); the function returns one
report per image. Spec: ``module.path:function`` (an importable module) or ``path/to/file.py:function``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cvlm.generators.base import GeneratorError, ReportGenerator


def import_callable(target: str) -> Callable:
    """Resolve ``module:function`` or ``file.py:function`` (attribute paths like ``mod:Class.method`` too).

    Raises:
        GeneratorError: If the module or the attribute cannot be found or is not callable.
    """
    module_name, sep, attribute = target.rpartition(":")
    if not sep or not module_name or not attribute:
        raise GeneratorError(
            f"callable spec {target!r}: expected module:function or path/to/file.py:function."
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise GeneratorError(f"callable spec {target!r}: {path} does not exist.")
            spec = importlib.util.spec_from_file_location(f"cvlm_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise GeneratorError(f"callable spec {target!r}: cannot import {module_name}: {err}") from err
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise GeneratorError(f"callable spec {target!r}: {module_name} has no attribute {attribute!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise GeneratorError(f"callable spec {target!r}: {attribute} is not callable.")
    return obj


class CallableGenerator(ReportGenerator):
    """Wrap a Python function as a report generator.

    Args:
        function: The function, or its spec ``module:function`` / ``file.py:function``.
        batch_size: Images per call.
        name: Name in outputs (default: the function's name).
    """

    def __init__(
        self,
        function: str | Callable[[list[np.ndarray]], Sequence[str]],
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        self.function = import_callable(function) if isinstance(function, str) else function
        self.batch_size = batch_size
        self.name = name or getattr(self.function, "__name__", "callable")

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        return list(self.function(images))
