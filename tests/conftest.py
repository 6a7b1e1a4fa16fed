"""Shared fixtures: real checkpoint files, real images, an isolated cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own user cache and no stray weights."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE", str(d))
    # and its own remembered run settings (none at first)
    monkeypatch.setenv("NAPARI_SAMBOXES_CONFIG", str(d / "config"))
    monkeypatch.delenv("NAPARI_SAMBOXES_WEIGHTS", raising=False)
    # the suite keeps Python's collector as it is: each test's viewers are
    # collected after it (the panel's gc.freeze is for a long session)
    monkeypatch.setenv("NAPARI_SAMBOXES_GC_FREEZE", "0")
    return d


@pytest.fixture(scope="session")
def structured_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real vit_t checkpoint whose masks are nested blobs around points."""
    from napari_samboxes.testing import write_structured_checkpoint

    return write_structured_checkpoint(tmp_path_factory.mktemp("w") / "structured.pt")


@pytest.fixture(scope="session")
def random_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised vit_t checkpoint."""
    from napari_samboxes.testing import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("w") / "random.pt")


@pytest.fixture(scope="session")
def structured_model(structured_ckpt: Path):  # noqa: ANN201
    """The structured checkpoint, loaded through the product's loader."""
    from napari_samboxes import load_model

    return load_model(structured_ckpt, device="cpu")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A small natural photo (scikit-image's astronaut, 192 x 256 RGB)."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (192, 256), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def synthetic() -> np.ndarray:
    """A synthetic 160 x 224 picture: discs and a square on a gradient."""
    yy, xx = np.mgrid[0:160, 0:224]
    img = np.stack([xx * 255 // 223, yy * 255 // 159, np.full_like(xx, 60)], -1)
    for cy, cx, r, col in [(40, 50, 25, (250, 40, 40)), (110, 150, 35, (30, 220, 90))]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = col
    img[90:140, 20:70] = (20, 20, 230)
    return img.astype(np.uint8)


@pytest.fixture
def decoder_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The decoder batches run during a test (the prompts of each)."""
    from napari_samboxes import engine

    calls: list[int] = []
    real = engine._Crop.process_batch

    def counted(self, points):  # noqa: ANN001, ANN202
        calls.append(len(points))
        return real(self, points)

    monkeypatch.setattr(engine._Crop, "process_batch", counted)
    return calls
