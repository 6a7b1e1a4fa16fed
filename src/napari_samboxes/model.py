"""Find, verify, download and load the MobileSAM checkpoint.

No napari or Qt here; torch and ``mobile_sam`` are imported lazily so that
importing the plugin stays fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from mobile_sam.modeling import Sam

__all__ = [
    "CheckpointError",
    "DeviceError",
    "SamModel",
    "WEIGHTS_ENV",
    "build_vit_t",
    "candidate_paths",
    "default_cache_dir",
    "fetch_weights",
    "file_digest",
    "find_checkpoint",
    "import_mobile_sam",
    "load_model",
    "pick_device",
]

WEIGHTS_ENV = "NAPARI_SAMBOXES_WEIGHTS"
CACHE_ENV = "NAPARI_SAMBOXES_CACHE"
WEIGHTS_NAME = "mobile_sam.pt"
#: ``weights/mobile_sam.pt`` of a source checkout (src layout).
CHECKOUT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / WEIGHTS_NAME
WEIGHTS_URL = (
    "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
)
#: xxh128 of the official checkpoint (as recorded by micro-sam's registry).
WEIGHTS_HASH = "xxh128:8eadbc88aeb9d8c7e0b4b60c3db48bd0"

_HOW_TO_GET = (
    "Get it with the 'Download weights' button of the SAM boxes widget, "
    "with `napari-samboxes fetch-weights`, or download mobile_sam.pt from "
    "the MobileSAM repository (weights/mobile_sam.pt) and set "
    f"{WEIGHTS_ENV} to its path."
)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a MobileSAM vit_t."""


class DeviceError(ValueError):
    """A device that is unknown or not available on this machine."""


@dataclass
class SamModel:
    """A loaded MobileSAM (vit_t) model and where it came from.

    Attributes
    ----------
    sam : mobile_sam.modeling.Sam
        The model, in eval mode, on ``device``.
    checkpoint : pathlib.Path
        The file it was loaded from.
    digest : str
        xxh128 hex digest of that file (part of every cache key).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``.
    official : bool
        Whether the file is the official MobileSAM checkpoint.
    """

    sam: Sam
    checkpoint: Path
    digest: str
    device: str
    official: bool


def avoid_llvm_clash() -> None:
    """Keep triton out of a process where Mesa's libLLVM is loaded.

    Mesa's OpenGL drivers (llvmpipe under Xvfb, and Intel/AMD GPUs on Linux)
    load ``libLLVM``; importing triton (torch pulls it in through
    ``torch._dynamo`` when torchvision is imported) after that crashes the
    process with a segmentation fault, as seen here under napari. Where
    libLLVM is already mapped and triton is not yet imported, triton is
    marked unavailable, so torch runs without it (the plugin never uses
    ``torch.compile``). Elsewhere nothing changes.
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libLLVM" in maps:
        sys.modules["triton"] = None  # type: ignore[assignment]


def import_mobile_sam() -> Any:
    """Import ``mobile_sam`` without its timm warnings reaching users."""
    avoid_llvm_clash()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*registry.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="timm")
        import mobile_sam

    return mobile_sam


def build_vit_t() -> Sam:
    """Build MobileSAM's vit_t architecture with random weights (eval)."""
    mobile_sam = import_mobile_sam()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = mobile_sam.build_sam_vit_t()
    sam.eval()
    return sam


def default_cache_dir() -> Path:
    """Return the user cache directory of napari-samboxes.

    ``NAPARI_SAMBOXES_CACHE`` overrides the platform's default.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-samboxes"))


def candidate_paths() -> list[tuple[str, Path]]:
    """Where :func:`find_checkpoint` looks, in order, with a description."""
    out: list[tuple[str, Path]] = []
    env = _env_weights()
    if env is not None:
        out.append((f"${WEIGHTS_ENV}", env))
    checkout = CHECKOUT_WEIGHTS
    out.append(("the checkout's weights/ folder", checkout))
    out.append(("the user cache", default_cache_dir() / WEIGHTS_NAME))
    return out


def _env_weights() -> Path | None:
    """``$NAPARI_SAMBOXES_WEIGHTS`` as a path, or None where unset/empty."""
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(env).expanduser() if env else None


def find_checkpoint() -> Path | None:
    """Return the first existing checkpoint of :func:`candidate_paths`.

    Where ``$NAPARI_SAMBOXES_WEIGHTS`` is set, it alone is looked at: a
    missing file there gives None, never another checkpoint (the user asked
    for that file; :func:`load_model` then says that the variable points
    nowhere).
    """
    env = _env_weights()
    if env is not None:
        return env if env.is_file() else None
    for _, path in candidate_paths():
        if path.is_file():
            return path
    return None


def file_digest(path: str | Path) -> str:
    """Return the xxh128 hex digest of a file."""
    import xxhash

    h = xxhash.xxh128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to CUDA, then MPS, then CPU; check the others.

    Raises
    ------
    DeviceError
        For an unknown device name, or one this machine does not have
        (``cuda`` without CUDA, ``cuda:3`` with two GPUs, ``mps`` off Apple
        silicon).
    """
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if n_cuda else "mps" if has_mps else "cpu"
    if device == "mps":
        ok, what = has_mps, "MPS (Apple silicon) is not available here"
    elif device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        ok = int(device[5:] or 0) < n_cuda
        what = f"this machine has {n_cuda} CUDA device(s)"
    else:
        ok, what = device == "cpu", "that is no device name: use auto, cpu, cuda or mps"
    if not ok:
        raise DeviceError(f"device {device!r} asked for, but {what}")
    return device


_OTHER_SAM = {
    "image_encoder.pos_embed": "an original SAM (vit_b/vit_l/vit_h)",
    "image_encoder.blocks.0.attn.qkv.weight": "an original SAM (ViT)",
}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    import torch

    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes). {_HOW_TO_GET}")
    try:
        # weights_only: a checkpoint is data; a pickle that would run code
        # is refused by torch's restricted unpickler before anything runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4"
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        culprit = next(
            (ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), ""
        )
        if culprit or "global" in text.lower():
            raise CheckpointError(
                f"checkpoint {path} was refused: it is not plain tensor data and "
                f"would run code when loaded ({culprit or 'disallowed global'}). "
                "Use only checkpoints from a source you trust. " + _HOW_TO_GET
            ) from e
        raise CheckpointError(
            f"checkpoint {path} could not be read ({size} bytes; not a torch "
            f"file or damaged). {_HOW_TO_GET}"
        ) from e
    except Exception as e:  # noqa: BLE001 - truncated, a text file (KeyError)...
        raise CheckpointError(
            f"checkpoint {path} could not be read ({size} bytes; truncated or "
            f"not a torch file: {type(e).__name__}: {e}). {_HOW_TO_GET}"
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict of tensors. {_HOW_TO_GET}"
        )
    return obj


def load_model(checkpoint: str | Path | None = None, device: str = "auto") -> SamModel:
    """Load MobileSAM (vit_t) from a checkpoint file.

    Parameters
    ----------
    checkpoint : str or Path, optional
        The ``mobile_sam.pt`` file. ``None`` looks, in order, at
        ``$NAPARI_SAMBOXES_WEIGHTS``, ``weights/mobile_sam.pt`` of a source
        checkout and the user cache directory.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``,
        ``"mps"``.

    Returns
    -------
    SamModel
        The model in eval mode on the chosen device.

    Raises
    ------
    CheckpointError
        If the file is missing, empty, truncated, refused (code in the
        pickle) or not a MobileSAM vit_t state dict (wrong keys, or a
        tensor of the wrong shape), or ``$NAPARI_SAMBOXES_WEIGHTS`` points
        to no file. The message says what was looked for and how to fix it.
        A bad file raises nothing else.
    DeviceError
        If the device is unknown or not available (checked before the file
        is read).
    """
    dev = pick_device(device)
    env = _env_weights()
    if checkpoint is None and env is not None and not env.is_file():
        raise CheckpointError(
            f"{WEIGHTS_ENV} is set to {env}, which is "
            f"{'a folder' if env.is_dir() else 'not there'}: point it at "
            f"mobile_sam.pt, or unset it to use the checkout's weights/ or "
            f"the user cache ({default_cache_dir() / WEIGHTS_NAME}). " + _HOW_TO_GET
        )
    if checkpoint is None:
        found = find_checkpoint()
        if found is None:
            where = "; ".join(f"{d}: {p}" for d, p in candidate_paths())
            raise CheckpointError(
                f"No MobileSAM checkpoint found (looked at {where}). {_HOW_TO_GET}"
            )
        path = found
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist. {_HOW_TO_GET}")
    state = _read_state_dict(path)
    for key, what in _OTHER_SAM.items():
        if key in state:
            raise CheckpointError(
                f"checkpoint {path} is {what}, not MobileSAM vit_t: "
                "napari-samboxes runs MobileSAM only. " + _HOW_TO_GET
            )
    sam = build_vit_t()
    try:
        result = sam.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        first = next((ln.strip() for ln in str(e).splitlines() if "size" in ln), e)
        raise CheckpointError(
            f"checkpoint {path} is not a MobileSAM vit_t state dict ({first}). "
            + _HOW_TO_GET
        ) from e
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:3])
        unexpected = ", ".join(result.unexpected_keys[:3])
        raise CheckpointError(
            f"checkpoint {path} is not a MobileSAM vit_t state dict "
            f"({len(result.missing_keys)} keys missing, e.g. {missing or '-'}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. "
            f"{unexpected or '-'}). {_HOW_TO_GET}"
        )
    digest = file_digest(path)
    official = "xxh128:" + digest == WEIGHTS_HASH
    if not official:
        warnings.warn(
            f"{path} is not the official MobileSAM checkpoint (xxh128 "
            f"{digest}); using it as a fine-tuned vit_t.",
            UserWarning,
            stacklevel=2,
        )
    try:
        sam.to(dev)
    except RuntimeError as e:  # out of GPU memory, a broken driver
        raise DeviceError(f"cannot move the model to {dev}: {e}") from e
    sam.eval()
    return SamModel(
        sam=sam, checkpoint=path, digest=digest, device=dev, official=official
    )


def fetch_weights(dest: str | Path | None = None) -> Path:
    """Download the official MobileSAM checkpoint, checking its hash.

    Never called implicitly. The download goes to a temporary file that is
    moved into place only after the hash matched, so an interrupted download
    never leaves a file that looks valid.

    Parameters
    ----------
    dest : str or Path, optional
        A folder, or a file path ending in ``.pt`` (any case: ``X.PT`` is a
        file). Default: the user cache.

    Returns
    -------
    pathlib.Path
        Where the checkpoint now is.
    """
    import pooch

    if dest is None:
        folder, name = default_cache_dir(), WEIGHTS_NAME
    else:
        dest = Path(dest).expanduser()
        if dest.suffix.lower() == ".pt" and not dest.is_dir():
            folder, name = dest.parent, dest.name
        else:
            folder, name = dest, WEIGHTS_NAME
    folder.mkdir(parents=True, exist_ok=True)
    path = pooch.retrieve(
        WEIGHTS_URL,
        known_hash=WEIGHTS_HASH,
        fname=name,
        path=folder,
        progressbar=False,
    )
    return Path(path)
