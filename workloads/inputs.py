"""Image files a task names: confined to the worker's input directory, read with a size cap.

A payload is untrusted, so whoever can publish a task chooses the path. A path is therefore
taken relative to one directory the operator chose (`SPECTASK_IMAGE_INPUT_ROOT`) and must stay
inside it: `..` is refused outright, symbolic links are resolved and the result must still lie
under the root, and only regular files are read. The file is then opened one path component at
a time from a descriptor of the root with `O_NOFOLLOW`, so a link swapped in after the check
is refused instead of followed.

A path outside the root gets the same message whether or not it exists, and never a size, so
the rest of the file system cannot be probed through error messages. The read itself is
bounded (`max_bytes` + 1 at most): `st_size` says 0 for `/proc` files, and a file can grow
while it is read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from workloads.errors import PermanentTaskError

ROOT_SETTING: Final = "SPECTASK_IMAGE_INPUT_ROOT"
SIZE_SETTING: Final = "SPECTASK_MAX_IMAGE_BYTES"

_SHOWN_CHARS: Final = 200
_CHUNK: Final = 1 << 20
_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused as not a regular file.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def shown(text: str) -> str:
    """The caller's own text, quoted and cut short, for an error message."""
    cut = text[:_SHOWN_CHARS]
    return repr(cut) + ("..." if len(text) > _SHOWN_CHARS else "")


def _outside(path: str) -> PermanentTaskError:
    return PermanentTaskError(
        f"image {shown(path)} is not inside the worker's image input directory "
        f"({ROOT_SETTING}); give a path relative to it"
    )


def too_large(label: str, max_bytes: int, size: int | None = None) -> PermanentTaskError:
    """The refusal of an image over the byte limit (`size` when it is known and may be told)."""
    actual = "is larger than" if size is None else f"is {size} bytes, more than"
    return PermanentTaskError(f"{label} {actual} the limit of {max_bytes} bytes ({SIZE_SETTING})")


def confined_parts(path: str, root: Path) -> tuple[str, ...]:
    """The components of `path` below the resolved `root`, or a refusal if it leaves the root.

    Decided on the path text and the links inside the root alone: a path outside gets one
    message, whether or not it exists.
    """
    if "\x00" in path:
        raise PermanentTaskError(f"image {shown(path)} contains a NUL character")
    given = PurePosixPath(path)
    if ".." in given.parts:
        raise PermanentTaskError(
            f"image {shown(path)} must not contain '..' ({ROOT_SETTING} confines it)"
        )
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root / given))
    if not real.is_relative_to(real_root):
        raise _outside(path)
    return real.relative_to(real_root).parts


def _open_beneath(real_root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of `real_root/parts...` opened without following any symbolic link."""
    directory = os.open(real_root, _DIRECTORY_FLAGS)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(parts[-1] if parts else ".", _FILE_FLAGS, dir_fd=directory)
    finally:
        os.close(directory)


def read_bounded(fd: int, max_bytes: int, label: str) -> bytes:
    """At most `max_bytes` from `fd`; a refusal as soon as there is one byte more."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise too_large(label, max_bytes)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image a task names by path, to be read from below `root` (at most `max_bytes`)."""

    path: str
    root: Path
    max_bytes: int

    @property
    def label(self) -> str:
        return f"image {shown(self.path)}"

    def read(self) -> bytes:
        """The file's bytes, or a `PermanentTaskError` that tells nothing outside the root."""
        parts = confined_parts(self.path, self.root)
        real_root = Path(os.path.realpath(self.root))
        if not real_root.is_dir():
            raise PermanentTaskError(
                f"the image input directory {ROOT_SETTING}={str(self.root)!r} does not exist "
                "on the worker: create it or point the setting at the directory with the images"
            )
        try:
            fd = _open_beneath(real_root, parts)
        except OSError as exc:
            raise self._unopenable(exc) from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise PermanentTaskError(f"{self.label} is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise PermanentTaskError(f"{self.label} is not a regular file")
            if info.st_size > self.max_bytes:
                raise too_large(self.label, self.max_bytes, info.st_size)
            data = read_bounded(fd, self.max_bytes, self.label)
        finally:
            os.close(fd)
        if not data:
            raise PermanentTaskError(f"{self.label} is an empty file")
        return data

    def _unopenable(self, exc: OSError) -> PermanentTaskError:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return PermanentTaskError(f"{self.label} does not exist in the image input directory")
        if exc.errno == errno.EACCES:
            return PermanentTaskError(f"{self.label} is not readable by the worker")
        if exc.errno == errno.ELOOP:
            return PermanentTaskError(
                f"{self.label} is a symbolic link that does not resolve inside the image input "
                "directory (a loop, or replaced while it was opened)"
            )
        return PermanentTaskError(f"{self.label} cannot be opened: {exc.strerror}")
