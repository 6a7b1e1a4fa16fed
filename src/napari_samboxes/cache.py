"""Raw per-mask results and image embeddings on disk, keyed by image,
checkpoint and the settings that change the raw results.

The raw results (before thresholds) are cached, so every threshold setting
is served from one entry (``<key>.npz``); the image embedding sits next to
it (``<key>.emb.npz``, float32 as computed, so a cached embedding gives the
same candidates). Every array is checked for dtype and shape on load: a
damaged entry is ignored (and overwritten by the next save), never fatal.
Writes are atomic. No napari or Qt here.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_write_bytes
from .candidates import RawMasks
from .settings import DEFAULTS, Settings

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Embedding

__all__ = ["CandidateCache", "cache_key"]

#: Bump when the engine's results change meaning (3: a batch whose last
#: CPU chunk held one prompt changed the masks of every later batch).
ENGINE_VERSION = 3
#: dtype and trailing shape of each RawMasks array (leading axis: masks)
_LAYOUT: dict[str, tuple[type, tuple[int, ...]]] = {
    "boxes": (np.int64, (4,)),
    "areas": (np.int64, ()),
    "iou_preds": (np.float32, ()),
    "stability": (np.float32, ()),
    "points": (np.float64, (2,)),
    "crop_boxes": (np.int64, (4,)),
    "near_edge": (np.bool_, ()),
}
_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def cache_key(
    rgb8: np.ndarray, checkpoint_digest: str, settings: Settings | int
) -> str:
    """Key of an image's candidates.

    The content of the 8-bit RGB image fed to SAM, the checkpoint's content
    hash and the settings that change the raw results: the point grid and
    the crop layers (thresholds and NMS are applied after the cache). An
    int is taken as ``points_per_side`` with the other defaults.
    """
    import xxhash

    s = settings if isinstance(settings, Settings) else DEFAULTS
    if not isinstance(settings, Settings):
        s = s.with_(points_per_side=int(settings))
    grid = (
        s.points_per_side,
        s.crop_n_layers,
        repr(float(s.crop_overlap_ratio)),
        s.crop_n_points_downscale_factor,
    )
    h = xxhash.xxh128()
    arr = np.ascontiguousarray(rgb8)
    h.update(f"v{ENGINE_VERSION}|{arr.shape}|{arr.dtype}|".encode())
    h.update(arr.data)
    h.update(f"|{checkpoint_digest}|grid={grid}".encode())
    return h.hexdigest()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    """An ``.npz`` (as ``np.savez``) whose bytes depend on the arrays only
    (no time stamps): equal results give equal files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _arrays_of(raw: RawMasks) -> dict[str, np.ndarray]:
    """A :class:`RawMasks`' arrays in their stored dtypes."""
    return {k: np.asarray(getattr(raw, k), dtype=dt) for k, (dt, _) in _LAYOUT.items()}


def _raw_of(parts: dict[str, np.ndarray] | None) -> RawMasks | None:
    """The :class:`RawMasks` in a read entry, or None if any array is
    missing or of the wrong dtype or shape."""
    if parts is None or "areas" not in parts:
        return None
    n = len(parts["areas"]) if parts["areas"].ndim == 1 else -1
    for name, (dtype, tail) in _LAYOUT.items():
        a = parts.get(name)
        if a is None or a.dtype != dtype or a.shape != (n, *tail):
            return None
    return RawMasks(**{k: parts[k] for k in _LAYOUT})


class CandidateCache:
    """A folder of ``<key>.npz`` (:class:`RawMasks`) and ``<key>.emb.npz``.

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
        """File of an entry's raw results."""
        return self.folder / f"{key}.npz"

    def embedding_path(self, key: str) -> Path:
        """File of an entry's image embedding."""
        return self.folder / f"{key}.emb.npz"

    def _read(self, p: Path) -> dict[str, np.ndarray] | None:
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except _ERRORS:
            return None

    def _write(self, p: Path, data: bytes) -> Path | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return atomic_write_bytes(p, data)
        except OSError:
            return None

    def partial_path(self, key: str) -> Path:
        """File of a run stopped half way (its finished batches)."""
        return self.folder / f"{key}.part.npz"

    def load(self, key: str) -> RawMasks | None:
        """Return the entry, or None if absent or damaged (any array of the
        wrong dtype or shape, a missing array, an unreadable file)."""
        return _raw_of(self._read(self.path(key)))

    def save(self, key: str, raw: RawMasks) -> Path | None:
        """Store an entry atomically; returns None if the disk refused."""
        return self._write(self.path(key), _npz_bytes(**_arrays_of(raw)))

    def load_partial(
        self, key: str, n_prompts: int
    ) -> tuple[RawMasks, np.ndarray] | None:
        """The finished batches of a run stopped half way: their masks and
        each mask's global prompt index (see
        :class:`~napari_samboxes.engine.PromptPlan`), or None if absent,
        damaged, or not of a run with ``n_prompts`` prompts."""
        parts = self._read(self.partial_path(key))
        raw = _raw_of(parts)
        rows = None if parts is None else parts.get("prompt")
        if raw is None or rows is None or rows.dtype != np.int64:
            return None
        if rows.shape != (len(raw),) or (
            len(rows) and not (rows.min() >= 0 and rows.max() < n_prompts)
        ):
            return None
        return raw, rows

    def save_partial(self, key: str, raw: RawMasks, rows: np.ndarray) -> Path | None:
        """Store a run's finished batches (``rows``: each mask's prompt)."""
        arrays = {**_arrays_of(raw), "prompt": np.asarray(rows, dtype=np.int64)}
        return self._write(self.partial_path(key), _npz_bytes(**arrays))

    def drop_partial(self, key: str) -> None:
        """Forget a partial entry (its run is complete)."""
        try:
            self.partial_path(key).unlink(missing_ok=True)
        except OSError:
            pass

    def load_embedding(self, key: str, device: Any = "cpu") -> Embedding | None:
        """The image embedding stored with an entry, on ``device``, or None
        if absent or damaged (not float32 1 x C x h x w, bad sizes)."""
        from .engine import Embedding

        parts = self._read(self.embedding_path(key))
        if parts is None:
            return None
        f = parts.get("features")
        sizes = [parts.get("input_size"), parts.get("original_size")]
        if f is None or f.dtype != np.float32 or f.ndim != 4 or f.shape[0] != 1:
            return None
        for s in sizes:
            if s is None or s.dtype != np.int64 or s.shape != (2,) or (s < 1).any():
                return None
        import torch

        return Embedding(
            features=torch.from_numpy(f).to(device),
            input_size=(int(sizes[0][0]), int(sizes[0][1])),  # type: ignore[index]
            original_size=(int(sizes[1][0]), int(sizes[1][1])),  # type: ignore[index]
        )

    def save_embedding(self, key: str, embedding: Embedding) -> Path | None:
        """Store an image embedding (float32, unchanged) atomically."""
        data = _npz_bytes(
            features=embedding.features.detach().float().cpu().numpy(),
            input_size=np.asarray(embedding.input_size, dtype=np.int64),
            original_size=np.asarray(embedding.original_size, dtype=np.int64),
        )
        return self._write(self.embedding_path(key), data)
