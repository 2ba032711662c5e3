"""Output files: safe names derived from task ids, and atomic writes.

A task's output is named after its task id, so a retried (or redelivered) task overwrites its
earlier output instead of leaving a second file; the write goes to a temporary file in the
same directory and is renamed over the target, so readers never see a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from workloads.errors import PermanentTaskError

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def safe_name(task_id: str) -> str:
    """The task id itself, if it can be used as a file name as is (no path tricks)."""
    if not _SAFE_NAME.fullmatch(task_id) or ".." in task_id:
        raise PermanentTaskError(
            f"task id {task_id!r} cannot name an output file: use up to 200 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return task_id


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` (creating its directory) through a temporary file and a rename.

    Returns the absolute path written.
    """
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), 0o644)  # mkstemp makes it 0600; outputs are for sharing
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return path
