"""Moved to :mod:`napari_samboxes.export` and :mod:`napari_samboxes.importing`.

A shim for old imports (``tests/test_folder.py``), to be deleted once they
use the new modules: the rest of ``formats/`` never imports the folder
code, and nothing imports this module.
"""

from ..convert import FORMATS, ConvertSummary
from ..export import export_dataset
from ..formats.errors import FormatError
from ..importing import import_dataset

__all__ = [
    "FORMATS",
    "ConvertSummary",
    "FormatError",
    "export_dataset",
    "import_dataset",
]
