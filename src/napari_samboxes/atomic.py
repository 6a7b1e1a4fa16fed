"""Atomic file writes: a temporary file in the same folder, fsync, rename.

The one helper every writer of the plugin uses; no napari or Qt.

- The previous file, if any, is intact whatever fails before the rename
  (full disk, read-only folder, an interrupted process).
- A new file gets the mode the umask allows (``0o666 & ~umask``, as
  ``open()`` gives); a file that is replaced keeps its mode.
- A symbolic link is written through: its target is replaced, the link
  stays (as ``open(path, "w")`` would do).
- A folder at ``path`` is refused before anything is written.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = ["OutsideError", "atomic_write_bytes", "atomic_write_text", "check_inside"]


class OutsideError(PermissionError):
    """A write that would land outside the folder it must stay in."""


def check_inside(path: str | Path, within: str | Path) -> Path:
    """``path``'s real file (links followed), which must lie in ``within``.

    Raises
    ------
    OutsideError
        When a symbolic link (of the path or of a folder above it) leads out
        of ``within``.
    """
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(within))
    if real != root and root not in real.parents:
        link = "is a symbolic link" if Path(path).is_symlink() else "leads"
        raise OutsideError(f"{path} {link} to {real}, outside {root}; not written")
    return real


def _target(path: Path) -> Path:
    """The file that a write to ``path`` replaces (symbolic links followed)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


#: Bytes of the file name kept in a temporary file's name.
_TEMP_HEAD = 40


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, exclusive temporary file; the kernel applies the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    # a short name: ``.<start of name>.<random>.tmp`` stays far below the
    # 255 bytes a file name may have, whatever the length of ``name``
    head = name.encode("utf-8")[:_TEMP_HEAD].decode("utf-8", "ignore")
    while True:
        tmp = folder / f".{head}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows has no folder handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | Path, data: bytes, *, within: str | Path | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : str or Path
        The file to write. A symbolic link is written through to its target.
    data : bytes
        The whole new content.
    within : str or Path, optional
        A folder the written file must lie in (links followed).

    Returns
    -------
    pathlib.Path
        ``path`` as given.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a folder.
    OutsideError
        If ``within`` is given and the file lies outside it.
    OSError
        If the write fails (the previous file is then intact and no
        temporary file is left behind).
    """
    path = Path(path)
    if within is not None:
        check_inside(path, within)
    target = _target(path)
    if target.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, "is a folder, not a file; cannot write there", str(path)
        )
    folder = target.parent if str(target.parent) else Path(".")
    try:
        old_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        old_mode = None
    fd, tmp = _create_temp(folder, target.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if old_mode is not None:
                os.chmod(tmp, old_mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    return path


def atomic_write_text(
    path: str | Path, text: str, *, within: str | Path | None = None
) -> Path:
    """Write UTF-8 ``text`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"), within=within)
