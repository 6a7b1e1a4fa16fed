"""The error of malformed annotation files; no napari or Qt.

It lives here, below every reader, so that the formats never import the
folder code (:mod:`napari_samboxes.dataset` re-exports it).
"""

from __future__ import annotations

__all__ = ["FormatError"]


class FormatError(ValueError):
    """A malformed annotation or class file; the message names the file."""
