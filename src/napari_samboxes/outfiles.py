"""The files of an export: planned first, checked, then written.

No napari or Qt. An export is a list of :class:`OutFile` (text to write,
or an image to link or copy). :func:`check_targets` runs before the first
write and refuses a target, or a folder above it, that is a symbolic link
out of OUT. :func:`write_all` then writes text atomically inside OUT and
places images by replacing the entry itself (a link left by an earlier
export is replaced, never written through), as absolute symbolic links or,
with ``copy``, as copies (also when the file system has no links).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .atomic import OutsideError, atomic_write_text, check_inside

__all__ = ["OutFile", "check_targets", "remove_stale", "write_all"]


@dataclass(frozen=True)
class OutFile:
    """One file of an export: ``text`` to write, or an ``image`` to place."""

    path: Path
    text: str | None = None
    image: Path | None = None


def check_targets(files: Iterable[OutFile], out: Path) -> None:
    """Refuse, before anything is written, targets that lead out of ``out``.

    Raises
    ------
    OutsideError
        Naming the first target (or folder above it) that is a symbolic
        link out of ``out``.
    IsADirectoryError
        For a target that is a folder.
    """
    checked: set[Path] = set()
    for f in files:
        for parent in [f.path.parent, *f.path.parent.parents]:
            if parent in checked or parent == out.parent:
                break
            checked.add(parent)
            if parent.exists() or parent.is_symlink():
                check_inside(parent, out)
        if f.path.is_dir() and not f.path.is_symlink():
            raise IsADirectoryError(f"{f.path} is a folder; not written")
        if f.text is not None and f.path.is_symlink():
            check_inside(f.path, out)


def _place(src: Path, dst: Path, copy: bool) -> bool:
    """Link (or copy) ``src`` at ``dst``, replacing the entry; whether it
    was copied."""
    head = dst.name.encode("utf-8")[:40].decode("utf-8", "ignore")  # short
    tmp = dst.parent / f".{head}.{secrets.token_hex(6)}.tmp"
    try:
        if not copy:
            try:
                os.symlink(src.resolve(), tmp)
            except OSError:  # no links here (some file systems, Windows)
                copy = True
        if copy:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return copy


def write_all(files: Sequence[OutFile], out: Path, copy: bool = False) -> int:
    """Write every file (after :func:`check_targets`); returns how many
    images were copied although links were asked for."""
    check_targets(files, out)
    fallbacks = 0
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        if f.text is not None:
            atomic_write_text(f.path, f.text, within=out)
        elif f.image is not None:
            fallbacks += _place(f.image, f.path, copy) and not copy
    return fallbacks


def remove_stale(paths: Iterable[Path], out: Path) -> None:
    """Remove files an earlier export left (an image now in another
    subset): only entries inside ``out``, links removed as links."""
    for p in paths:
        if os.path.lexists(p) and not p.is_dir():
            try:
                check_inside(p.parent, out)
            except OutsideError:
                continue
            p.unlink()
