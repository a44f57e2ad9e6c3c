"""Writing results so that a kill, a full disk or a read-only folder never costs finished work.

Three rules every verb follows (docs/hardening.md):

* a file that must be whole (``metrics.json``, ``prepare.json``, a checkpoint's state) is written to a
  temporary file beside it and renamed over it with :func:`os.replace`, which is atomic on POSIX: a kill
  leaves the old file or the new one, never half of one (:func:`atomic_write_text`);
* a log that grows line by line (``index.jsonl``, ``manifest.jsonl``) gets each batch of lines in one
  ``write`` on an ``O_APPEND`` descriptor (:func:`append_lines`): lines of several processes never
  interleave, and a kill can tear only the last line, which the readers drop;
* an output folder is probed with a small file before any work starts (:func:`check_writable`), and a
  write that fails names the file and says what to do (:class:`OutputWriteError`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
"""errno values that mean "the disk (or the user's quota) is full"."""


class OutputWriteError(OSError):
    """An output could not be written; the message names the path and says what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def explain_os_error(err: OSError, path: str | Path | None = None) -> str:
    """A one-line message for a failed *write* that names the file and says what to do.

    Args:
        err: The error (``os.write`` and friends raise it without a file name).
        path: The file or folder being written, used when ``err`` names none.

    Example:
        >>> import errno
        >>> explain_os_error(OSError(errno.ENOSPC, "No space left"), "out/index.jsonl")[:53]
        'no space left on device while writing out/index.jsonl'
    """
    if isinstance(err, OutputWriteError):
        return str(err)
    where = err.filename or path
    where_text = f" {where}" if where is not None else ""
    if err.errno in NO_SPACE:
        return (
            f"no space left on device while writing{where_text}: free some space (or choose another "
            "output folder) and run the same command again; finished results are kept and the run resumes."
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where_text}: {err.strerror}; choose a writable output folder."
    if err.strerror:
        return f"{err.strerror} while writing{where_text}."
    return str(err)


def _wrapped(err: OSError, path: Path) -> OutputWriteError:
    return OutputWriteError(err.errno, explain_os_error(err, path), str(path))


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (``os.write`` may write fewer than asked, e.g. on a nearly full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def append_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Append whole lines to ``path`` in one write on an ``O_APPEND`` descriptor.

    Raises:
        OutputWriteError: If the write fails (full disk, no permission), naming ``path``.
    """
    path = Path(path)
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8")
    if not data:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    except OutputWriteError:
        raise
    except OSError as err:
        raise _wrapped(err, path) from err


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Raises:
        OutputWriteError: If the write fails, naming ``path``; ``path`` is then left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp makes the file private (0600); results get the permissions any new file gets.
            os.chmod(tmp, 0o666 & ~_umask())
            _write_all(fd, data)
            # Without fsync a crash of the machine (not only of the process) could leave an empty file
            # under the final name after the rename.
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OutputWriteError):
            raise
        raise _wrapped(err, path) from err
    return path


def _umask() -> int:
    """The process's umask (read by setting it, then put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


PROBE = ".cvlm-write-probe"


def check_writable(target: str | Path) -> Path:
    """Prove that an output folder can be written, before any work starts; nothing is left behind.

    A folder that does not exist yet is not created here (a verb that then refuses its arguments leaves
    no empty folder): its nearest existing ancestor must be a writable folder instead.

    Args:
        target: An output folder (for an output *file*, pass its parent).

    Returns:
        ``target``.

    Raises:
        OutputWriteError: If ``target`` (or the ancestor it would be created in) is not a writable
            folder; the message names ``target``.
    """
    target = Path(target)
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f"{PROBE}.{os.getpid()}"
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"cvlm")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        reason = "no space left on device" if err.errno in NO_SPACE else (err.strerror or str(err))
        raise OutputWriteError(
            err.errno,
            f"output folder {target} is not writable ({reason}); choose another --out or fix its "
            "permissions. Nothing was done.",
            str(target),
        ) from err
    return target


__all__ = [
    "NO_SPACE",
    "OutputWriteError",
    "append_lines",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "explain_os_error",
]
