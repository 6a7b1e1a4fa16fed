"""The widget's controls: how they are built and read (magicgui).

Names are the public contract (DESIGN.md): users script them and tests
drive them. Defaults come from :mod:`napari_samboxes.settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    Widget,
)
from psygnal import Signal

from .pipeline import RunRequest
from .settings import DEFAULTS, MAX_POINTS_PER_SIDE, Settings

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["ClassBox", "make_controls", "run_request", "thresholds"]

#: The class of new boxes before the user names one.
DEFAULT_CLASS = "object"


class ClassBox(ComboBox):
    """A drop-down of classes that also takes a new name (typed, or set
    from Python: ``box_label.value = "cup"`` adds "cup")."""

    #: Emitted with the new names when classes are added.
    classes_added = Signal(list)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native.setEditable(True)
        self.native.setCurrentText(str(self.value or ""))
        self.native.lineEdit().editingFinished.connect(self._typed)

    def reset_choices(self, *_: Any) -> None:
        """Keep the classes: napari resets a dock's choices when layers
        change, which would bring back the construction-time list."""
        if not self.choices:
            super().reset_choices()

    def _typed(self) -> None:
        text = self.native.currentText().strip()
        if text and text != self.value:
            self.value = text

    @property  # type: ignore[override]
    def value(self) -> Any:
        """The current class."""
        return ComboBox.value.fget(self)  # type: ignore[attr-defined]

    @value.setter
    def value(self, name: Any) -> None:
        name = str(name).strip()
        if name and name not in self.choices:
            self.add_classes([name])
        ComboBox.value.fset(self, name)  # type: ignore[attr-defined]

    def add_classes(self, names: list[str]) -> list[str]:
        """Append new class names (order kept, no duplicates); returns the new."""
        new = [n for n in dict.fromkeys(names) if n and n not in self.choices]
        if new and tuple(self.choices) == (DEFAULT_CLASS,):
            self.choices = tuple(new)  # a class list replaces the placeholder
            self.classes_added.emit(new)
        elif new:
            self.choices = (*self.choices, *new)
            self.classes_added.emit(new)
        return new


def _wrapping_label(name: str) -> Label:
    """A status label that wraps long text instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(name=name, label="", value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(10)
    # room for four wrapped lines (a wrapped label with an ignored width
    # cannot ask for its height)
    label.native.setMinimumHeight(4 * label.native.fontMetrics().lineSpacing() + 4)
    return label


def _unit(name: str, text: str, value: float) -> FloatSpinBox:
    return FloatSpinBox(name=name, label=text, value=value, min=0.0, max=1.0, step=0.01)


#: The dock's widest: with napari's layer controls docked on the left, the
#: canvas keeps at least half of a 1280 px window.
MAX_DOCK_WIDTH = 300


def make_controls(
    image_choices: Callable[..., list[tuple[str, Any]]], checkpoint: Path | None
) -> list[Widget]:
    """All controls, in display order."""
    d = DEFAULTS
    from ._preview import DISPLAY_MODES

    return [
        FileEdit(name="folder", label="folder", mode="d", value=""),  # type: ignore[arg-type]
        PushButton(name="prev_image", text="< Prev (a)", enabled=False),
        PushButton(name="next_image", text="Next (d) >", enabled=False),
        PushButton(name="next_unannotated", text="Next unannotated", enabled=False),
        _wrapping_label("folder_progress"),
        _wrapping_label("status"),
        ComboBox(name="image", label="image", choices=image_choices),
        FileEdit(
            name="checkpoint",
            label="checkpoint",
            mode="r",  # type: ignore[arg-type]
            filter="*.pt",
            value=str(checkpoint) if checkpoint else "",  # type: ignore[arg-type]
        ),
        PushButton(name="download", text="Download weights"),
        ComboBox(name="device", label="device", choices=["auto", "cpu", "cuda", "mps"]),
        SpinBox(
            name="points_per_side",
            label="points per side",
            value=d.points_per_side,
            min=1,
            max=MAX_POINTS_PER_SIDE,
        ),
        SpinBox(
            name="crop_n_layers",
            label="crop layers",
            value=d.crop_n_layers,
            min=0,
            max=4,
        ),
        _unit("pred_iou_thresh", "pred IoU thresh", d.pred_iou_thresh),
        _unit("stability_score_thresh", "stability thresh", d.stability_score_thresh),
        _unit("box_nms_thresh", "box NMS thresh", d.box_nms_thresh),
        ComboBox(
            name="show_candidates",
            label="show candidates",
            choices=list(DISPLAY_MODES),
            value=DISPLAY_MODES[0],
        ),
        PushButton(name="run", text="Run"),
        PushButton(name="cancel", text="Cancel", enabled=False),
        ClassBox(name="box_label", label="class", choices=[DEFAULT_CLASS]),
        FileEdit(
            name="classes_file",
            label="class list",
            mode="w",  # type: ignore[arg-type]
            filter="*.txt",
            value="",  # type: ignore[arg-type]
        ),
        PushButton(name="relabel", text="Relabel selected boxes"),
        PushButton(name="smaller", text="Smaller  [", tooltip="next smaller box ( [ )"),
        PushButton(name="larger", text="Larger  ]", tooltip="next larger box ( ] )"),
        PushButton(name="tighten", text="Tighten", tooltip="snap boxes to SAM"),
        PushButton(name="undo", text="Undo", tooltip="Ctrl+Z"),
        PushButton(name="redo", text="Redo", tooltip="Ctrl+Shift+Z"),
    ]


def thresholds(w: SamBoxesWidget) -> tuple[float, float, float]:
    """The three threshold controls' values."""
    return (
        float(w.pred_iou_thresh.value),
        float(w.stability_score_thresh.value),
        float(w.box_nms_thresh.value),
    )


def run_request(w: SamBoxesWidget, image: Any, checkpoint: str) -> RunRequest:
    """A run request for an image layer (cheap: no data is read here).

    Raises ``SettingsError`` for out-of-range settings.
    """
    settings: Settings = w.session.settings.with_(
        points_per_side=int(w.points_per_side.value),
        crop_n_layers=int(w.crop_n_layers.value),
    )
    shape0 = (image.data[0] if image.multiscale else image.data).shape
    if not image.rgb and image.ndim >= 3 and shape0[-1] in (3, 4):
        w.notify(
            f"'{image.name}' looks like colour data but its layer has rgb=False; "
            "segmenting the current 2D slice. Open it with rgb=True to segment "
            "it in colour.",
            "warning",
        )
    n_lead = image.ndim - 2
    point = image.world_to_data(w.viewer.dims.point[-image.ndim :]) if n_lead else ()
    index = tuple(int(round(float(point[i]))) for i in range(n_lead))
    _check_plane(shape0, image.rgb, n_lead)
    return RunRequest(
        data=image.data,
        checkpoint=checkpoint,
        device=str(w.device.value),
        settings=settings,
        index=index,
        rgb=bool(image.rgb),
        multiscale=bool(image.multiscale),
        contrast_limits=tuple(image.contrast_limits),  # type: ignore[arg-type]
    )


def _check_plane(shape: tuple[int, ...], rgb: bool, n_lead: int) -> None:
    """Refuse planes SAM cannot use before any work starts."""
    from .image import MIN_SIDE

    hw = shape[n_lead : n_lead + 2]
    if min(hw) == 0:
        raise ValueError(f"the image is empty (shape {shape})")
    if min(hw) < MIN_SIDE:
        raise ValueError(
            f"the image is {hw[0]} x {hw[1]} pixels; at least {MIN_SIDE} x "
            f"{MIN_SIDE} is needed to find objects"
        )


def start_download(w: SamBoxesWidget) -> None:
    """Download the weights in a worker; one sentence on failure."""
    from napari.qt.threading import thread_worker

    from .model import fetch_weights

    worker = thread_worker(fetch_weights, start_thread=False, ignore_errors=True)()

    def done(path: Path) -> None:
        w.checkpoint.value = str(path)
        w.notify(f"downloaded {path}")

    def failed(exc: BaseException) -> None:
        w.notify(
            f"the download failed ({exc}); download mobile_sam.pt by hand and "
            "choose it as the checkpoint.",
            "error",
        )
        w._update_checkpoint_status()

    worker.returned.connect(done)
    worker.errored.connect(failed)
    w.download.enabled = False
    w.say("downloading weights...")
    worker.start()


def load_classes(self: SamBoxesWidget) -> None:
    """Read the chosen class list into the class drop-down, then save the union."""
    from .dataset import read_classes

    path = Path(str(self.classes_file.value or ""))
    if path.is_file():
        try:
            self.box_label.add_classes(read_classes(path))
        except (OSError, ValueError) as e:
            self.notify(str(e), "error")
    save_classes(self)


def save_classes(self: SamBoxesWidget) -> None:
    """Write the classes to the chosen class list (atomic)."""
    from .dataset import write_classes

    path = str(self.classes_file.value or "")
    if path not in ("", "."):
        try:
            write_classes(path, list(self.box_label.choices))
        except (OSError, ValueError) as e:
            self.notify(f"could not save the class list: {e}", "error")
