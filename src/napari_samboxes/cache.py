"""Raw per-mask results on disk, keyed by image, checkpoint and settings.

The raw results (before thresholds) are cached, so every threshold setting
is served from one entry. A damaged entry is ignored (and overwritten by the
next save); it is never fatal. No napari or Qt here.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .candidates import RawMasks
from .settings import Settings

__all__ = ["CandidateCache", "cache_key"]

#: Bump when the engine's results change meaning.
ENGINE_VERSION = 1
_FIELDS = ("boxes", "areas", "iou_preds", "stability", "points")


def cache_key(rgb8: np.ndarray, checkpoint_digest: str, settings: Settings) -> str:
    """Key of an image's candidates: content of the 8-bit RGB image fed to
    SAM, the checkpoint's content hash and the point grid."""
    import xxhash

    h = xxhash.xxh128()
    arr = np.ascontiguousarray(rgb8)
    h.update(f"v{ENGINE_VERSION}|{arr.shape}|{arr.dtype}|".encode())
    h.update(arr.data)
    grid = (
        settings.points_per_side,
        settings.crop_n_layers,
        round(settings.crop_overlap_ratio, 9),
        settings.crop_n_points_downscale_factor,
    )
    h.update(f"|{checkpoint_digest}|grid={grid}".encode())
    return h.hexdigest()


class CandidateCache:
    """A folder of ``<key>.npz`` files holding :class:`RawMasks`.

    Parameters
    ----------
    folder : str or Path, optional
        Default: ``candidates/`` in the user cache directory
        (``NAPARI_SAMBOXES_CACHE`` overrides).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        if folder is None:
            from .model import default_cache_dir

            folder = default_cache_dir() / "candidates"
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        """File of an entry."""
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> RawMasks | None:
        """Return the entry, or None if absent or damaged."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                parts = {k: z[k] for k in _FIELDS}
            raw = RawMasks(**parts)
            n = len(raw.areas)
            if (
                raw.boxes.shape != (n, 4)
                or raw.points.shape != (n, 2)
                or any(len(parts[k]) != n for k in ("iou_preds", "stability"))
            ):
                return None
            return raw
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, key: str, raw: RawMasks) -> Path | None:
        """Store an entry atomically; returns None if the disk refused."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **{k: getattr(raw, k) for k in _FIELDS})
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(buf.getvalue())
                os.replace(tmp, self.path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return None
        return self.path(key)
