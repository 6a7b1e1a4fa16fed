"""napari-samboxes: MobileSAM "segment everything" as a bounding-box tool.

The public API is importable from here; torch and mobile_sam are imported
only when a model is loaded or run.
"""

from __future__ import annotations

from .candidates import Candidates, RawMasks
from .model import CheckpointError, SamModel, fetch_weights, load_model
from .pipeline import propose_boxes
from .select import select_box

__version__ = "0.1.0"

__all__ = [
    "Candidates",
    "CheckpointError",
    "RawMasks",
    "SamModel",
    "__version__",
    "fetch_weights",
    "load_model",
    "propose_boxes",
    "select_box",
]
