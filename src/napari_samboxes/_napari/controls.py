"""The panel's controls: how they are built, grouped and read (magicgui).

Names are the public contract (DESIGN.md): users script them and tests
drive them (``widget.folder``, ``widget.box_label``, ``widget.run``...),
whatever group they sit in. Defaults come from
:mod:`napari_samboxes.settings`.

The dock is at most :data:`MAX_DOCK_WIDTH` wide and grouped: folder,
classes, picking (with the box list), model; the model's grid, crop layers
and thresholds are folded away under "settings".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    Widget,
)
from psygnal import Signal

from ..classes import DEFAULT_CLASS, check_class_name
from ..image import MIN_SIDE
from ..pipeline import RunRequest
from ..settings import DEFAULTS, MAX_POINTS_PER_SIDE, Settings
from .annotator import DISPLAY_MODES

__all__ = [
    "GROUPS",
    "MAX_DOCK_WIDTH",
    "ClassBox",
    "make_groups",
    "run_request",
]

#: The dock's widest: with napari's layer controls docked on the left, the
#: canvas keeps at least half of a 1280 px window.
MAX_DOCK_WIDTH = 300
#: The group containers, in display order.
GROUPS = ("folder_group", "classes_group", "picking_group", "model_group")


class ClassBox(ComboBox):
    """The class drop-down. It cannot be typed into (a new class comes
    from the ``new_class`` field); setting an unknown name from Python
    (``box_label.value = "cup"``) adds it, announced by ``classes_added``."""

    #: Emitted with the new names when classes are added here.
    classes_added = Signal(list)

    def reset_choices(self, *_: Any) -> None:
        """Keep the classes: napari resets a dock's choices when layers
        change, which would bring back the construction-time list."""
        if not self.choices:
            super().reset_choices()

    @property  # type: ignore[override]
    def value(self) -> Any:
        """The current class."""
        return ComboBox.value.fget(self)  # type: ignore[attr-defined]

    @value.setter
    def value(self, name: Any) -> None:
        name = check_class_name(str(name))
        if name not in self.choices:
            self.choices = (*self.choices, name)
            self.classes_added.emit([name])
        ComboBox.value.fset(self, name)  # type: ignore[attr-defined]

    def set_classes(self, names: tuple[str, ...]) -> None:
        """Show these classes (the current one kept when it is among them)."""
        if tuple(self.choices) == names:
            return
        current = self.value
        with self.changed.blocked():
            if tuple(self.choices) != names[: len(self.choices)]:
                self.choices = ()  # Qt keeps old items' places: list anew
            self.choices = names
            if current in names:
                ComboBox.value.fset(self, current)  # type: ignore[attr-defined]
        if self.value != current:
            self.changed.emit(self.value)


def _wrapping_label(name: str, lines: int) -> Label:
    """A status label that wraps long text instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(name=name, label="", value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(10)
    # a wrapped label with an ignored width cannot ask for its height
    label.native.setMinimumHeight(lines * label.native.fontMetrics().lineSpacing() + 4)
    return label


def _title(text: str) -> Label:
    label = Label(value=text)
    label.native.setStyleSheet("font-weight: bold; padding-top: 4px;")
    return label


def _group(name: str, title: str, widgets: list[Widget]) -> Container:
    """A titled group: the title over a labelled column of controls."""
    body = Container(widgets=widgets, labels=True)
    return Container(name=name, labels=False, widgets=[_title(title), body])


def _row(*widgets: Widget) -> Container:
    return Container(widgets=list(widgets), layout="horizontal", labels=False)


def _unit(name: str, text: str, value: float) -> FloatSpinBox:
    return FloatSpinBox(name=name, label=text, value=value, min=0.0, max=1.0, step=0.01)


def make_groups(
    image_choices: Callable[..., list[tuple[str, Any]]], checkpoint: Path | None
) -> list[Container]:
    """Every control, in its group, in display order."""
    d = DEFAULTS
    folder = Container(
        name="folder_group",
        labels=False,
        widgets=[
            _title("Folder"),
            FileEdit(name="folder", label="folder", mode="d", value=""),  # type: ignore[arg-type]
            _row(
                PushButton(name="prev_image", text="< Prev (a)", enabled=False),
                PushButton(name="next_image", text="Next (d) >", enabled=False),
            ),
            _row(
                PushButton(
                    name="next_unannotated", text="Next unannotated", enabled=False
                ),
                PushButton(
                    name="mark_done",
                    text="Done (Space)",
                    enabled=False,
                    tooltip="mark this image done (also with no boxes); again to undo",
                ),
            ),
            _wrapping_label("folder_progress", 2),
        ],
    )
    classes = _group(
        "classes_group",
        "Classes",
        [
            ClassBox(name="box_label", label="class (1-9)", choices=[DEFAULT_CLASS]),
            LineEdit(name="new_class", label="new class", value=""),
            FileEdit(
                name="classes_file",
                label="class list",
                mode="w",  # type: ignore[arg-type]
                filter="*.txt",
                value="",  # type: ignore[arg-type]
            ),
        ],
    )
    picking = Container(
        name="picking_group",
        labels=False,
        widgets=[
            _title("Picking"),
            _wrapping_label("status", 3),
            _row(
                PushButton(
                    name="smaller", text="Smaller [", tooltip="next smaller box"
                ),
                PushButton(name="larger", text="Larger ]", tooltip="next larger box"),
                PushButton(name="tighten", text="Tighten", tooltip="snap boxes to SAM"),
                PushButton(
                    name="audit",
                    text="Audit",
                    tooltip="walk the boxes SAM would draw otherwise, largest "
                    "problem first: Tab next, Enter take the magenta box, Esc "
                    "keep; again to end",
                ),
            ),
            _row(
                PushButton(name="undo", text="Undo", tooltip="Ctrl+Z"),
                PushButton(name="redo", text="Redo", tooltip="Ctrl+Shift+Z"),
                PushButton(
                    name="relabel",
                    text="Relabel",
                    tooltip="give the selected boxes the current class (or press 1-9)",
                ),
                PushButton(name="delete", text="Delete", tooltip="Delete / Backspace"),
            ),
            Container(
                labels=True,
                widgets=[
                    ComboBox(
                        name="show_candidates",
                        label="show candidates",
                        choices=list(DISPLAY_MODES),
                        value=DISPLAY_MODES[0],
                    )
                ],
            ),
        ],
    )
    settings_widgets: list[Widget] = [
        SpinBox(
            name="points_per_side",
            label="points per side",
            value=d.points_per_side,
            min=1,
            max=MAX_POINTS_PER_SIDE,
        ),
        SpinBox(
            name="crop_n_layers", label="crop layers", value=d.crop_n_layers, max=4
        ),
        _unit("pred_iou_thresh", "pred IoU thresh", d.pred_iou_thresh),
        _unit("stability_score_thresh", "stability thresh", d.stability_score_thresh),
        _unit("box_nms_thresh", "box NMS thresh", d.box_nms_thresh),
    ]
    settings = Container(
        name="settings_group", labels=True, visible=False, widgets=settings_widgets
    )
    model_widgets: list[Widget] = [
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
        _row(
            PushButton(name="run", text="Run"),
            PushButton(name="cancel", text="Cancel", enabled=False),
            PushButton(name="show_settings", text="Settings >"),
        ),
        settings,
    ]
    model = _group("model_group", "Model", model_widgets)
    groups = [folder, classes, picking, model]
    for group in groups:
        _tighten_margins(group)
    return groups


def _tighten_margins(container: Container) -> None:
    """No margins inside the groups: the dock stays short."""
    for widget in container:
        if isinstance(widget, Container):
            widget.margins = (0, 0, 0, 0)
            _tighten_margins(widget)
    container.margins = (0, 2, 0, 2)


def find(container: Container, name: str) -> Widget | None:
    """The control called ``name`` anywhere under ``container``."""
    for widget in container:
        if widget.name == name:
            return widget
        if isinstance(widget, Container):
            found = find(widget, name)
            if found is not None:
                return found
    return None


def thresholds(get: Callable[[str], Any]) -> tuple[float, float, float]:
    """The three threshold controls' values."""
    return (
        float(get("pred_iou_thresh").value),
        float(get("stability_score_thresh").value),
        float(get("box_nms_thresh").value),
    )


def run_request(
    settings: Settings,
    image: Any,
    checkpoint: str,
    device: str,
    dims_point: tuple[float, ...],
    warn: Callable[[str], Any],
) -> RunRequest:
    """A run request for an image layer (cheap: no data is read here).

    Raises ``SettingsError`` or ``ValueError`` for what cannot run.
    """
    shape0 = (image.data[0] if image.multiscale else image.data).shape
    if not image.rgb and image.ndim >= 3 and shape0[-1] in (3, 4):
        warn(
            f"'{image.name}' looks like colour data but its layer has rgb=False; "
            "segmenting the current 2D slice. Open it with rgb=True to segment "
            "it in colour."
        )
    n_lead = image.ndim - 2
    point = image.world_to_data(dims_point[-image.ndim :]) if n_lead else ()
    index = tuple(int(round(float(point[i]))) for i in range(n_lead))
    _check_plane(shape0, n_lead)
    return RunRequest(
        data=image.data,
        checkpoint=checkpoint,
        device=device,
        settings=settings,
        index=index,
        rgb=bool(image.rgb),
        multiscale=bool(image.multiscale),
        contrast_limits=tuple(image.contrast_limits),  # type: ignore[arg-type]
    )


def _check_plane(shape: tuple[int, ...], n_lead: int) -> None:
    """Refuse planes SAM cannot use before any work starts."""
    hw = shape[n_lead : n_lead + 2]
    if min(hw) == 0:
        raise ValueError(f"the image is empty (shape {shape})")
    if min(hw) < MIN_SIDE:
        raise ValueError(
            f"the image is {hw[0]} x {hw[1]} pixels; at least {MIN_SIDE} x "
            f"{MIN_SIDE} is needed to find objects"
        )
