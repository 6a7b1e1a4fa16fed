"""The box list: one row per box of the shown image (``BoxList``).

Columns: class (with its colour; a drop-down of the classes edits it),
width x height, source and score. Selecting rows selects the boxes in the
boxes layer and centres the view on them; a box selected on the canvas
selects its row. A class chosen in the list is one undoable relabel. The
list never takes the keyboard (keys go to the annotation mode), so
``Delete`` and the digit keys act on the selected boxes.

The table is a model over the session's immutable
:class:`~napari_samboxes.boxes.Boxes`: a change of the boxes is one model
reset, whatever the number of rows (the view draws only the visible ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QAbstractTableModel, QItemSelection, QModelIndex, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QSizePolicy,
    QStyledItemDelegate,
    QTableView,
    QWidget,
)

from ..boxes import Boxes
from ..classes import ClassList
from ..formats.boxtable import ACTIONS_COLUMN, CREATED_COLUMN

__all__ = ["BoxList", "BoxTableModel"]

_HEADERS = ("class", "w x h", "from", "score")
#: How the list shows each box source (the column is narrow).
_SOURCE_TEXT = {
    "candidate": "SAM",
    "island": "SAM part",
    "prompt": "prompt",
    "hand": "hand",
    "import": "file",
}


class BoxTableModel(QAbstractTableModel):
    """The boxes of the shown image as a Qt table model."""

    def __init__(self, classes: ClassList, relabel: Callable[[int, str], Any]):
        super().__init__()
        self.classes = classes
        self.relabel = relabel
        self.boxes = Boxes()

    def set_boxes(self, boxes: Boxes) -> None:
        """Show other boxes (one reset)."""
        self.beginResetModel()
        self.boxes = boxes
        self.endResetModel()

    def rowCount(self, parent: Any = None) -> int:  # noqa: N802 (Qt's)
        return 0 if parent is not None and parent.isValid() else len(self.boxes)

    def columnCount(self, parent: Any = None) -> int:  # noqa: N802 (Qt's)
        return len(_HEADERS)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return _HEADERS[section]
        return str(section + 1)

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if not index.isValid() or index.row() >= len(self.boxes):
            return None
        b, r, c = self.boxes, index.row(), index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if c == 0:
                return b.labels[r]
            if c == 1:
                x0, y0, x1, y1 = b.xyxy[r]
                return f"{x1 - x0 + 1:.0f} x {y1 - y0 + 1:.0f}"
            if c == 2:
                return _SOURCE_TEXT.get(b.sources[r], b.sources[r])
            score = float(b.scores[r])
            return "" if math.isnan(score) else f"{score:.2f}"
        if role == Qt.ItemDataRole.DecorationRole and c == 0:
            return QColor(self.classes.colour(b.labels[r]))
        if role == Qt.ItemDataRole.ToolTipRole:
            x0, y0, x1, y1 = b.xyxy[r]
            made = b.cell(CREATED_COLUMN, r)
            actions = b.cell(ACTIONS_COLUMN, r)
            return (
                f"'{b.labels[r]}': x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f} "
                f"(source: {b.sources[r]})"
                + (f"; made {made[:19].replace('T', ' ')} UTC" if made else "")
                + (f" in {actions} action(s)" if actions else "")
            )
        return None

    def flags(self, index: QModelIndex) -> Any:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0:
            base |= Qt.ItemFlag.ItemIsEditable
        return base

    def setData(  # noqa: N802 (Qt's)
        self, index: QModelIndex, value: Any, role: Any = Qt.ItemDataRole.EditRole
    ) -> bool:
        if role != Qt.ItemDataRole.EditRole or index.column() != 0:
            return False
        name = str(value).strip()
        if not name or name == self.boxes.labels[index.row()]:
            return False
        self.relabel(index.row(), name)
        return True


class _ClassDelegate(QStyledItemDelegate):
    """The class cell is edited with a drop-down of the classes; choosing
    one commits it and gives the keyboard back (``done``)."""

    def __init__(
        self, classes: ClassList, done: Callable[[], Any], parent: Any = None
    ) -> None:
        super().__init__(parent)
        self.classes = classes
        self.done = done

    def createEditor(self, parent: Any, option: Any, index: QModelIndex) -> Any:  # noqa: N802
        combo = QComboBox(parent)
        combo.addItems(list(self.classes.names))
        combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        combo.activated.connect(lambda _=None: self._chosen(combo))
        return combo

    def _chosen(self, combo: QComboBox) -> None:
        if combo.property("chosen"):
            return
        combo.setProperty("chosen", True)
        self.commitData.emit(combo)
        self.closeEditor.emit(combo, QStyledItemDelegate.EndEditHint.NoHint)
        self.done()

    def setEditorData(self, editor: Any, index: QModelIndex) -> None:  # noqa: N802
        editor.setCurrentText(str(index.data(Qt.ItemDataRole.EditRole)))
        editor.showPopup()

    def setModelData(self, editor: Any, model: Any, index: QModelIndex) -> None:  # noqa: N802
        model.setData(index, editor.currentText(), Qt.ItemDataRole.EditRole)


class BoxList(QTableView):
    """The box list panel (see the module docstring).

    Parameters
    ----------
    classes : ClassList
    select : callable
        Called with the selected rows when the user selects in the list.
    relabel : callable
        Called with a row and a class name chosen in its class cell.
    give_back : callable
        Gives the keyboard back to the canvas (after a class is chosen).
    """

    def __init__(
        self,
        classes: ClassList,
        select: Callable[[list[int]], Any],
        relabel: Callable[[int, str], Any],
        give_back: Callable[[], Any] = lambda: None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("box_list")
        self.model_ = BoxTableModel(classes, relabel)
        self.setModel(self.model_)
        self.setItemDelegateForColumn(0, _ClassDelegate(classes, give_back, self))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys go to the canvas
        rows: Any = self.verticalHeader()
        rows.setDefaultSectionSize(20)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header: Any = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col, width in ((1, 72), (2, 48), (3, 42)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Fixed)
            self.setColumnWidth(col, width)
        self.setMinimumHeight(90)
        # a handful of rows; more space goes to the canvas, not to the list
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._select = select
        self._syncing = False
        self._selection().selectionChanged.connect(self._on_selection)

    def sizeHint(self) -> Any:  # noqa: N802 (Qt's)
        hint = super().sizeHint()
        hint.setHeight(150)
        return hint

    @property
    def boxes(self) -> Boxes:
        """The boxes listed."""
        return self.model_.boxes

    def show_boxes(self, boxes: Boxes, selected: list[int]) -> None:
        """List ``boxes`` with ``selected`` rows selected."""
        if boxes is not self.model_.boxes:
            self._syncing = True
            try:
                self.model_.set_boxes(boxes)
            finally:
                self._syncing = False
        self.set_selected(selected)

    def selected_rows(self) -> list[int]:
        """The rows selected in the list."""
        return sorted({i.row() for i in self._selection().selectedRows()})

    def set_selected(self, rows: list[int]) -> None:
        """Select rows (from the layer), without calling back."""
        if sorted(rows) == self.selected_rows():
            return
        self._syncing = True
        try:
            sel = QItemSelection()
            last = self.model_.columnCount() - 1
            for r in rows:
                if 0 <= r < self.model_.rowCount():
                    sel.select(self.model_.index(r, 0), self.model_.index(r, last))
            model = self._selection()
            model.select(sel, model.SelectionFlag.ClearAndSelect)
            if rows:
                self.scrollTo(self.model_.index(rows[-1], 0))
        finally:
            self._syncing = False

    def _selection(self) -> Any:
        return self.selectionModel()

    def _on_selection(self, *_: Any) -> None:
        if not self._syncing:
            self._select(self.selected_rows())
