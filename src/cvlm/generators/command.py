"""Command adapter: any external program that speaks JSON lines, for generators in other environments.

Protocol: cvlm writes each image to a temporary 16-bit PNG (xray convention: 0 black air, 65535 white bone)
and sends one line per image on the program's stdin, ``{"id": "0", "image": "/tmp/.../0.png"}``, then closes
stdin. The program writes one line per image on stdout, ``{"id": "0", "report": "..."}``, in any order, and
exits 0. Logs go to stderr. One program run per batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cvlm.generators.base import GeneratorError, ReportGenerator
from cvlm.xray import write_png


def _stop(proc: subprocess.Popen) -> None:
    """Kill a program started in its own session, with every process it started, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # Windows: no process groups; the program itself
            proc.kill()
    proc.communicate()


class CommandGenerator(ReportGenerator):
    """Run ``command`` once per batch and read its reports.

    Args:
        command: The program and its arguments, a shell-like string (split with :func:`shlex.split`, no
            shell involved) or a list.
        timeout: Seconds one batch may take.
        batch_size: Images per program run.
        name: Name in outputs (default: the program's file name).

    Example:
        >>> g = CommandGenerator("python my_model.py --weights w.pt")  # doctest: +SKIP
    """

    pixel_convention = "xray [0, 1] written as 16-bit grey PNG files"

    def __init__(
        self,
        command: str | Sequence[str],
        timeout: float = 600.0,
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not self.argv:
            raise GeneratorError("command: empty command line.")
        self.timeout = timeout
        self.batch_size = batch_size
        self.name = name or Path(self.argv[0]).name

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="cvlm-command-") as tmp:
            lines = []
            for i, image in enumerate(images):
                path = write_png(image, Path(tmp) / f"{i}.png", bits=16)
                lines.append(json.dumps({"id": str(i), "image": str(path)}))
            done = self._run("\n".join(lines) + "\n")
        if done.returncode != 0:
            raise GeneratorError(
                f"command {shlex.join(self.argv)} exited with {done.returncode}: "
                f"{done.stderr.strip()[-2000:]}"
            )
        return self._parse(done.stdout, len(images))

    def _run(self, stdin: str) -> subprocess.CompletedProcess:
        """Run the program once; on a timeout kill it *and everything it started*, then fail."""
        try:
            # Its own session (process group): a wrapper script's children die with it on a timeout,
            # instead of living on and holding the pipes open.
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as err:
            raise GeneratorError(f"command {self.argv[0]!r} cannot be started: {err}") from err
        try:
            stdout, stderr = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired as err:
            _stop(proc)
            raise GeneratorError(
                f"command {shlex.join(self.argv)} took over {self.timeout:g} s and was stopped "
                "(raise the adapter's timeout if it is just slow)."
            ) from err
        except BaseException:
            # Ctrl-C reaches only cvlm's process group now: stop the program too, do not orphan it.
            _stop(proc)
            raise
        return subprocess.CompletedProcess(self.argv, proc.returncode, stdout, stderr)

    def _parse(self, stdout: str, n: int) -> list[str]:
        reports: dict[str, str] = {}
        for number, line in enumerate(stdout.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested
                raise GeneratorError(
                    f"command {self.name}: stdout line {number} is not JSON ({err}): {line[:200]!r}. "
                    "Write logs to stderr."
                ) from err
            if not isinstance(row, dict) or not isinstance(row.get("report"), str) or "id" not in row:
                raise GeneratorError(f'command {self.name}: line {number} lacks "id" and a string "report".')
            reports[str(row["id"])] = row["report"]
        missing = [str(i) for i in range(n) if str(i) not in reports]
        if missing:
            raise GeneratorError(f"command {self.name}: no report for image ids {', '.join(missing[:10])}.")
        return [reports[str(i)] for i in range(n)]
