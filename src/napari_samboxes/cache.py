"""The on-disk cache: raw per-mask results, partial runs and image
embeddings, bounded in size with least-recently-used eviction.

One layout, whoever writes it (the viewer, ``propose --cache``, Dask
workers, ``tighten``, ``masks``)::

    ROOT/candidates/<image>-<grid>.npz       raw results of a grid (all masks)
    ROOT/candidates/<image>-<grid>.part.npz  the finished batches of a stopped run
    ROOT/embeddings/<image>.npz              the image's embedding

``<image>`` hashes the 8-bit RGB image and the checkpoint only, so every
grid of an image shares one embedding; ``<grid>`` hashes the settings that
change the raw results (thresholds and NMS are applied after the cache).
Embeddings are stored float32, losslessly compressed (bytes regrouped by
significance, then deflated), so a cached embedding gives the same
candidates to the bit; ``NAPARI_SAMBOXES_CACHE_EMBEDDINGS=float16`` halves
them (a float16 embedding serves the prompt fallback, ``tighten`` and
``masks``, never a run's remaining batches), ``none`` stores none.

The folder is kept under a size limit (:data:`DEFAULT_LIMIT`,
``NAPARI_SAMBOXES_CACHE_LIMIT`` such as ``2GB``, or the ``limit``
argument). Every load sets the file's time of last use (``os.utime``, as
access times are often not kept), a running total of the bytes is kept
after each write, and when it passes the limit the least recently used
files are removed down to :data:`LOW_WATER` of it, so the folder is
scanned about once per tenth of the limit written (and every
:data:`RESCAN_WRITES` writes, to see what other processes wrote). The
entry being written and the :data:`RECENT_KEYS` entries used last are
never removed. Every array is checked for dtype and shape on load: a
damaged entry is ignored (and overwritten by the next save), never fatal.
Writes are atomic. No napari or Qt here.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .atomic import atomic_write_bytes
from .candidates import RawMasks
from .settings import DEFAULTS, Settings

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Embedding

__all__ = [
    "DEFAULT_LIMIT",
    "EMBEDDINGS_ENV",
    "KINDS",
    "LIMIT_ENV",
    "CacheFile",
    "CandidateCache",
    "cache_key",
    "embedding_key",
    "embeddings_from_env",
    "format_size",
    "limit_from_env",
    "parse_size",
]

#: Bump when the engine's results change meaning (3: a batch whose last
#: CPU chunk held one prompt changed the masks of every later batch).
ENGINE_VERSION = 3
#: Bump when the encoder's embedding of an image changes meaning.
EMBEDDING_VERSION = 1
#: The size limit when neither ``limit`` nor the environment says.
DEFAULT_LIMIT = 4_000_000_000
LIMIT_ENV = "NAPARI_SAMBOXES_CACHE_LIMIT"
EMBEDDINGS_ENV = "NAPARI_SAMBOXES_CACHE_EMBEDDINGS"
#: How embeddings are stored (``NAPARI_SAMBOXES_CACHE_EMBEDDINGS``).
EMBEDDING_MODES = ("float32", "float16", "none")
#: Eviction goes down to this share of the limit.
LOW_WATER = 0.9
#: The folder is re-measured after this many writes of one process.
RESCAN_WRITES = 256
#: Entries used last by this process that eviction keeps whatever their age.
RECENT_KEYS = 32
#: A temporary file this old is an unfinished write of a dead process.
STALE_TEMP_SECONDS = 3600.0
#: The kinds of files :meth:`CandidateCache.files` reports.
KINDS = ("candidates", "partial", "embeddings", "old layout", "unfinished")

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
#: files of the layout before this one (``ROOT/<key>[.emb|.part].npz``)
_OLD_NAME = re.compile(r"[0-9a-f]{32}(\.emb|\.part)?\.npz")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


# -- sizes ------------------------------------------------------------------
def parse_size(text: str | int) -> int | None:
    """Bytes in a size such as ``2GB``, ``500 MB``, ``1.5GiB`` or ``1000``.

    ``unlimited`` (or ``none``) gives None: no limit.

    Raises
    ------
    ValueError
        With a message that shows the accepted forms.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a cache size cannot be negative ({text})")
        return text
    s = str(text).strip().lower().replace(" ", "").replace("_", "")
    if s in ("unlimited", "none"):
        return None
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-z]*)", s, re.ASCII)
    size = float(m.group(1)) * _UNITS[m.group(2)] if m and m.group(2) in _UNITS else -1
    if not 0 <= size < 2**63:  # also a number too large for a float
        raise ValueError(
            f"{text!r} is not a size: write e.g. 2GB, 500MB, 1.5GiB or unlimited"
        )
    return int(size)


def format_size(n: int) -> str:
    """``n`` bytes for people: ``4.19 MB``, ``812 B``."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def limit_from_env() -> int | None:
    """The size limit of ``NAPARI_SAMBOXES_CACHE_LIMIT``, else
    :data:`DEFAULT_LIMIT` (None: unlimited); raises ValueError for a value
    that is not a size."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LIMIT
    try:
        return parse_size(text)
    except ValueError as e:
        raise ValueError(f"${LIMIT_ENV}: {e}") from None


def embeddings_from_env() -> str:
    """How to store embeddings (``NAPARI_SAMBOXES_CACHE_EMBEDDINGS``,
    default float32); raises ValueError for another value."""
    mode = os.environ.get(EMBEDDINGS_ENV, "").strip().lower() or "float32"
    if mode not in EMBEDDING_MODES:
        raise ValueError(
            f"${EMBEDDINGS_ENV} is {mode!r}: use one of {', '.join(EMBEDDING_MODES)}"
        )
    return mode


# -- keys -------------------------------------------------------------------
def cache_key(
    rgb8: np.ndarray, checkpoint_digest: str, settings: Settings | int
) -> str:
    """Key of an image's candidates: ``<image>-<grid>``.

    ``<image>`` hashes the content of the 8-bit RGB image fed to SAM and
    the checkpoint's content hash (the key of the embedding, see
    :func:`embedding_key`); ``<grid>`` the settings that change the raw
    results: the point grid and the crop layers (thresholds and NMS are
    applied after the cache). An int is taken as ``points_per_side`` with
    the other defaults.
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
    h.update(f"e{EMBEDDING_VERSION}|{arr.shape}|{arr.dtype}|".encode())
    h.update(arr.data)
    h.update(f"|{checkpoint_digest}".encode())
    g = xxhash.xxh64(f"v{ENGINE_VERSION}|grid={grid}".encode())
    return f"{h.hexdigest()}-{g.hexdigest()}"


def embedding_key(key: str) -> str:
    """The embedding's part of a :func:`cache_key` (image and checkpoint):
    the same for every grid of an image."""
    return key.split("-", 1)[0]


# -- files ------------------------------------------------------------------
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(deflate: bool = False, **arrays: np.ndarray) -> bytes:
    """An ``.npz`` (as ``np.savez``) whose bytes depend on the arrays only
    (no time stamps): equal results give equal files."""
    buf = io.BytesIO()
    kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", kind, allowZip64=True, compresslevel=1) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, _npy(a), compress_type=kind, compresslevel=1)
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


def _planes(features: np.ndarray) -> np.ndarray:
    """A float array's bytes regrouped by significance (all first bytes,
    then all second bytes, ...): exponents together deflate well."""
    flat = np.ascontiguousarray(features).reshape(-1)
    return flat.view(np.uint8).reshape(-1, flat.itemsize).T.copy()


def _unplanes(planes: np.ndarray, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The array :func:`_planes` regrouped."""
    return np.ascontiguousarray(planes.T).reshape(-1).view(dtype).reshape(shape)


class CacheFile(NamedTuple):
    """One file of the cache (see :meth:`CandidateCache.files`)."""

    path: Path
    kind: str  # one of KINDS
    size: int
    mtime: float  # the time of last use


def _kind(folder: str, name: str, now: float, mtime: float) -> str | None:
    """The kind of a file of ``folder`` (``""``: the root), or None for a
    file that is not the cache's or a write in progress."""
    if name.endswith(".tmp") and name.startswith("."):
        return "unfinished" if now - mtime > STALE_TEMP_SECONDS else None
    if name.startswith(".") or not name.endswith(".npz"):
        return None
    if folder == "candidates":
        return "partial" if name.endswith(".part.npz") else "candidates"
    if folder == "embeddings":
        return "embeddings"
    return "old layout" if _OLD_NAME.fullmatch(name) else None


class CandidateCache:
    """The cache folder: candidates, partial runs and embeddings.

    Parameters
    ----------
    root : str or Path, optional
        Default: the user cache directory (``NAPARI_SAMBOXES_CACHE``
        overrides); entries go to its ``candidates/`` and ``embeddings/``
        (other files there, such as the weights, are never touched).
    limit : int or str, optional
        Size limit in bytes, or a size such as ``"2GB"``; ``"unlimited"``
        for none. Default: ``NAPARI_SAMBOXES_CACHE_LIMIT``, else
        :data:`DEFAULT_LIMIT` (a bad value there is warned about and the
        default used).
    embeddings : str, optional
        ``"float32"`` (exact), ``"float16"`` or ``"none"``. Default:
        ``NAPARI_SAMBOXES_CACHE_EMBEDDINGS``, else ``"float32"``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        limit: int | str | None = None,
        embeddings: str | None = None,
    ) -> None:
        if root is None:
            from .model import default_cache_dir

            root = default_cache_dir()
        self.root = Path(root)
        self.candidates_dir = self.root / "candidates"
        self.embeddings_dir = self.root / "embeddings"
        self.limit = self._limit(limit)
        mode = embeddings if embeddings is not None else self._env_mode()
        if mode not in EMBEDDING_MODES:
            raise ValueError(f"embeddings must be one of {EMBEDDING_MODES}: {mode!r}")
        self.embeddings = mode
        #: times this object measured the folder (scans are rare)
        self.scans = 0
        self._total: int | None = None  # running total of the bytes
        self._writes = 0  # writes since the last scan
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # the total and eviction
        self._recent_lock = threading.Lock()

    @staticmethod
    def _limit(limit: int | str | None) -> int | None:
        if limit is not None:
            return parse_size(limit)
        try:
            return limit_from_env()
        except ValueError as e:
            warnings.warn(
                f"{e}; using {format_size(DEFAULT_LIMIT)}", RuntimeWarning, stacklevel=3
            )
            return DEFAULT_LIMIT

    @staticmethod
    def _env_mode() -> str:
        try:
            return embeddings_from_env()
        except ValueError as e:
            warnings.warn(f"{e}; storing float32", RuntimeWarning, stacklevel=3)
            return "float32"

    # -- paths ---------------------------------------------------------------
    def path(self, key: str) -> Path:
        """File of an entry's raw results."""
        return self.candidates_dir / f"{key}.npz"

    def partial_path(self, key: str) -> Path:
        """File of a run stopped half way (its finished batches)."""
        return self.candidates_dir / f"{key}.part.npz"

    def embedding_path(self, key: str) -> Path:
        """File of the embedding of an entry's image (any grid's key)."""
        return self.embeddings_dir / f"{embedding_key(key)}.npz"

    # -- reading and writing ---------------------------------------------------
    def _use(self, key: str) -> None:
        """Remember ``key`` as just used: eviction keeps it."""
        with self._recent_lock:
            self._recent[key] = None
            self._recent.move_to_end(key)
            while len(self._recent) > RECENT_KEYS:
                self._recent.popitem(last=False)

    def _read(self, p: Path) -> dict[str, np.ndarray] | None:
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except _ERRORS:
            return None

    @staticmethod
    def _touch(p: Path) -> None:
        """Set a loaded file's time of last use (what eviction orders by)."""
        try:
            os.utime(p)
        except OSError:  # a read-only cache still serves
            pass

    def _write(self, p: Path, data: bytes, key: str) -> Path | None:
        self._use(key)
        try:
            old = p.stat().st_size
        except OSError:
            old = 0
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            written = atomic_write_bytes(p, data)
        except OSError:
            return None
        self._account(len(data) - old)
        return written

    def load(self, key: str) -> RawMasks | None:
        """Return the entry, or None if absent or damaged (any array of the
        wrong dtype or shape, a missing array, an unreadable file)."""
        p = self.path(key)
        raw = _raw_of(self._read(p))
        if raw is not None:
            self._use(key)
            self._touch(p)
        return raw

    def save(self, key: str, raw: RawMasks) -> Path | None:
        """Store an entry atomically; returns None if the disk refused."""
        data = _npz_bytes(deflate=True, **_arrays_of(raw))
        return self._write(self.path(key), data, key)

    def load_partial(
        self, key: str, n_prompts: int
    ) -> tuple[RawMasks, np.ndarray] | None:
        """The finished batches of a run stopped half way: their masks and
        each mask's global prompt index (see
        :class:`~napari_samboxes.engine.PromptPlan`), or None if absent,
        damaged, or not of a run with ``n_prompts`` prompts."""
        p = self.partial_path(key)
        parts = self._read(p)
        raw = _raw_of(parts)
        rows = None if parts is None else parts.get("prompt")
        if raw is None or rows is None or rows.dtype != np.int64:
            return None
        if rows.shape != (len(raw),) or (
            len(rows) and not (rows.min() >= 0 and rows.max() < n_prompts)
        ):
            return None
        self._use(key)
        self._touch(p)
        return raw, rows

    def save_partial(self, key: str, raw: RawMasks, rows: np.ndarray) -> Path | None:
        """Store a run's finished batches (``rows``: each mask's prompt)."""
        arrays = {**_arrays_of(raw), "prompt": np.asarray(rows, dtype=np.int64)}
        data = _npz_bytes(deflate=True, **arrays)
        return self._write(self.partial_path(key), data, key)

    def drop_partial(self, key: str) -> None:
        """Forget a partial entry (its run is complete)."""
        p = self.partial_path(key)
        try:
            size = p.stat().st_size
            p.unlink()
        except OSError:
            return
        self._account(-size)

    def load_embedding(
        self, key: str, device: Any = "cpu", *, exact: bool = False
    ) -> Embedding | None:
        """The embedding of an entry's image, on ``device`` (float32), or
        None if absent or damaged (not 1 x C x h x w, bad sizes).

        ``exact``: only a float32 embedding (one stored float16 is
        refused), so that the candidates computed from it are those of a
        fresh encode, to the bit.
        """
        from .engine import Embedding

        p = self.embedding_path(key)
        parts = self._read(p)
        if parts is None:
            return None
        f = self._features(parts, exact)
        sizes = [parts.get("input_size"), parts.get("original_size")]
        if f is None or f.ndim != 4 or f.shape[0] != 1:
            return None
        for s in sizes:
            if s is None or s.dtype != np.int64 or s.shape != (2,) or (s < 1).any():
                return None
        import torch

        self._use(key)
        self._touch(p)
        return Embedding(
            features=torch.from_numpy(f.astype(np.float32, copy=False)).to(device),
            input_size=(int(sizes[0][0]), int(sizes[0][1])),  # type: ignore[index]
            original_size=(int(sizes[1][0]), int(sizes[1][1])),  # type: ignore[index]
        )

    @staticmethod
    def _features(parts: dict[str, np.ndarray], exact: bool) -> np.ndarray | None:
        """The stored features: ``planes`` (uint8, itemsize x n) with
        ``shape`` (int64) and ``dtype`` ("float32"/"float16")."""
        planes, shape, name = (parts.get(k) for k in ("planes", "shape", "dtype"))
        if planes is None or shape is None or name is None:
            return None
        allowed = ("float32",) if exact else ("float32", "float16")
        if name.shape != () or str(name) not in allowed:
            return None
        dtype = np.dtype(str(name))
        if shape.dtype != np.int64 or shape.ndim != 1 or (shape < 1).any():
            return None
        n = int(np.prod(shape))
        if planes.dtype != np.uint8 or planes.shape != (dtype.itemsize, n):
            return None
        return _unplanes(planes, dtype.type, tuple(int(x) for x in shape))

    def save_embedding(self, key: str, embedding: Embedding) -> Path | None:
        """Store an image's embedding atomically (float32 exact unless the
        cache stores float16, or nothing with ``embeddings="none"``)."""
        if self.embeddings == "none":
            return None
        f = embedding.features.detach().float().cpu().numpy()
        if self.embeddings == "float16":
            f = f.astype(np.float16)
        data = _npz_bytes(
            deflate=True,
            planes=_planes(f),
            shape=np.asarray(f.shape, dtype=np.int64),
            dtype=np.asarray(str(f.dtype)),
            input_size=np.asarray(embedding.input_size, dtype=np.int64),
            original_size=np.asarray(embedding.original_size, dtype=np.int64),
        )
        return self._write(self.embedding_path(key), data, key)

    # -- size ----------------------------------------------------------------
    def files(self) -> list[CacheFile]:
        """Every file of the cache, oldest use first (one folder scan).

        Writes in progress are left out; a temporary file of a write that
        died over an hour ago is listed as ``"unfinished"``.
        """
        now = time.time()
        found: list[CacheFile] = []
        for folder in ("candidates", "embeddings", ""):
            try:
                entries = list(os.scandir(self.root / folder))
            except OSError:
                continue
            for e in entries:
                try:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=False)
                except OSError:  # removed meanwhile
                    continue
                kind = _kind(folder, e.name, now, st.st_mtime)
                if kind is not None:
                    found.append(CacheFile(Path(e.path), kind, st.st_size, st.st_mtime))
        self.scans += 1
        return sorted(found, key=lambda f: f.mtime)

    def total_bytes(self) -> int:
        """The bytes the cache holds (measured now)."""
        return sum(f.size for f in self.files())

    def _account(self, delta: int) -> None:
        """Add a write's bytes to the running total; evict past the limit."""
        with self._lock:
            self._writes += 1
            if self._total is None or self._writes >= RESCAN_WRITES:
                self._total = self.total_bytes()
                self._writes = 0
            else:
                self._total += delta
            if self.limit is not None and self._total > self.limit:
                self._evict(int(self.limit * LOW_WATER))

    def _protected(self) -> set[str]:
        """File names eviction keeps: those of the keys used last."""
        with self._recent_lock:
            keys = list(self._recent)
        names: set[str] = set()
        for k in keys:
            names.update((f"{k}.npz", f"{k}.part.npz", f"{embedding_key(k)}.npz"))
        return names

    def _evict(self, target: int) -> None:
        """Remove the least recently used files until ``target`` bytes are
        left (never a protected one, never one used since the scan)."""
        files = self.files()
        keep = self._protected()
        total = sum(f.size for f in files)
        for f in files:
            if total <= target:
                break
            if f.path.name in keep and f.kind not in ("old layout", "unfinished"):
                continue
            try:
                if os.stat(f.path).st_mtime != f.mtime:  # used meanwhile
                    continue
                f.path.unlink()
            except OSError:
                continue
            total -= f.size
        self._total = total
        self._writes = 0

    def clear(self, older_than: float | None = None) -> tuple[int, int]:
        """Remove every file of the cache, or those not used for
        ``older_than`` seconds; returns (files, bytes) removed."""
        cutoff = None if older_than is None else time.time() - older_than
        n = size = 0
        for f in self.files():
            if cutoff is not None and f.mtime > cutoff:
                continue
            try:
                f.path.unlink()
            except OSError:
                continue
            n += 1
            size += f.size
        with self._lock:
            self._total = None
        return n, size
