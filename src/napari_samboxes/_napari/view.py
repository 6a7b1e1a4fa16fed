"""``napari-samboxes view``: a viewer with the panel docked, on a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats.boxtable import is_box_table
from .reader import PLUGIN, prefer_plugin_for_box_tables
from .sample_data import sample_image
from .widget import SamBoxesWidget

__all__ = ["open_view"]


def open_view(
    target: str | None = None,
    viewer: Any = None,
    settings: dict[str, Any] | None = None,
    checkpoint: str | None = None,
    recursive: bool = True,
) -> tuple[Any, Any]:
    """A viewer showing ``target``, with the SAM boxes widget docked.

    ``target`` is an image, a box table (opened with labels), a folder of
    images (folder mode, through the widget's ``folder`` control) or None
    (the sample photo). ``settings`` (run settings by
    :data:`~napari_samboxes.remember.FIELDS` name) are set before the first
    run, over what was remembered, and remembered (for a folder in its
    file; for an image in the user's); ``checkpoint`` is this session's;
    ``recursive`` False leaves a folder's subfolders out.
    The view is fitted to the image after docking. Returns ``(viewer,
    widget)``; raises what opening the file raised.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    prefer_plugin_for_box_tables()
    viewer = viewer if viewer is not None else napari.Viewer()
    p = Path(target) if target else None
    if p is None:
        viewer.add_image(sample_image(), name="photo", rgb=True)
    elif p.is_file():
        viewer.open(str(p), plugin=PLUGIN if is_box_table(p) else None)
    widget = SamBoxesWidget(viewer)
    widget.recursive = recursive
    if checkpoint:
        widget.checkpoint.value = str(checkpoint)
    if settings:
        # a folder stores them when it opens (in its own file)
        remember = p is None or not p.is_dir()
        widget.apply_run_settings(settings, remember=remember, pin=True)
    viewer.window.add_dock_widget(widget, name="SAM boxes", area="right")
    if p is not None and p.is_dir():
        widget.folder.value = str(p)  # opens folder mode
    QApplication.processEvents()  # let the dock take its width first
    viewer.reset_view()
    return viewer, widget
