"""COCO ids that stay: the id map stored with the annotations; no napari or Qt.

``DIR/annotations/coco_ids.json`` remembers the id of every image, box and
class that was exported to (or imported from) COCO::

    {"version": 1, "next_image_id": 3, "next_annotation_id": 6,
     "categories": {"cat": 1, "dog": 2},
     "images": {"a.png": {"id": 1, "boxes": [[1, "cat", 10, 5, 19, 14], ...]},
                ...}}

Each box is ``[annotation id, label, x_min, y_min, x_max, y_max]`` as
exported. The next export gives an image its remembered id and each box
the id of a remembered box with the same label and coordinates; new
images, boxes and classes get ids after every id ever given, so adding an
image (or a box) never renumbers another. Removed images keep their ids
reserved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_text
from .formats.errors import FormatError

__all__ = ["ID_FILE", "IdMap"]

#: The id map's file name, in ``DIR/annotations``.
ID_FILE = "coco_ids.json"

BoxKey = tuple[str, int, int, int, int]


def _box_keys(labels: Sequence[str], boxes: np.ndarray) -> list[BoxKey]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return [
        (str(lab), *(int(v) for v in row))  # type: ignore[misc]
        for lab, row in zip(labels, b, strict=True)
    ]


@dataclass
class IdMap:
    """Image, annotation and category ids, kept across exports."""

    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, list[tuple[int, BoxKey]]] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    next_image_id: int = 1
    next_annotation_id: int = 1

    # -- files -----------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """The map in ``path``; an empty map when the file is missing.

        Raises
        ------
        FormatError
            Naming the file, for one that is not an id map.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, RecursionError) as e:
            msg = " ".join(str(e).split())
            raise FormatError(
                f"{path}: not an id map ({msg}); delete it to renumber"
            ) from None
        try:
            return cls._from(doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise FormatError(
                f"{path}: not an id map ({type(e).__name__}: {e}); delete it to "
                "renumber"
            ) from None

    @classmethod
    def _from(cls, doc: Any) -> IdMap:
        def whole(v: Any) -> int:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{v!r} is not an id")
            return v

        m = cls(
            next_image_id=whole(doc["next_image_id"]),
            next_annotation_id=whole(doc["next_annotation_id"]),
            categories={str(k): whole(v) for k, v in doc["categories"].items()},
        )
        for name, entry in doc["images"].items():
            m.images[str(name)] = whole(entry["id"])
            m.boxes[str(name)] = [
                (whole(b[0]), (str(b[1]), *(int(v) for v in b[2:6])))  # type: ignore[misc]
                for b in entry["boxes"]
            ]
        ann = [i for rows in m.boxes.values() for i, _ in rows]
        for what, ids in (("image", list(m.images.values())), ("annotation", ann)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"an {what} id is used twice")
        if (
            max(m.images.values(), default=0) >= m.next_image_id
            or max(ann, default=0) >= m.next_annotation_id
        ):
            raise ValueError("next ids are not above the ids given")
        return m

    def to_json(self) -> str:
        """The map as the file's text."""
        doc = {
            "version": 1,
            "next_image_id": self.next_image_id,
            "next_annotation_id": self.next_annotation_id,
            "categories": self.categories,
            "images": {
                name: {
                    "id": image_id,
                    "boxes": [[i, *key] for i, key in self.boxes.get(name, [])],
                }
                for name, image_id in self.images.items()
            },
        }
        return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"

    def save(self, path: str | Path, within: str | Path | None = None) -> Path:
        """Write the map atomically (inside ``within``, if given)."""
        return atomic_write_text(path, self.to_json(), within=within)

    # -- ids -------------------------------------------------------------
    def image_id(self, name: str, wanted: int | None = None) -> int:
        """The image's id: remembered, else ``wanted`` if free, else new."""
        if name in self.images:
            return self.images[name]
        taken = set(self.images.values())
        new = wanted if wanted is not None and wanted not in taken else None
        new = self.next_image_id if new is None else new
        self.images[name] = new
        self.next_image_id = max(self.next_image_id, new + 1)
        return new

    def category_ids(self, classes: Sequence[str]) -> dict[str, int]:
        """Each class's category id (remembered, else new)."""
        for name in classes:
            if name not in self.categories:
                self.categories[name] = max(self.categories.values(), default=0) + 1
        return {name: self.categories[name] for name in classes}

    def annotation_ids(
        self,
        name: str,
        labels: Sequence[str],
        boxes: np.ndarray,
        wanted: Sequence[int | None] = (),
    ) -> list[int]:
        """Ids for an image's boxes, remembered as its boxes now.

        A box takes the id of a remembered box of the image with the same
        label and coordinates; else its ``wanted`` id (from an imported
        file) if no other box has it; else a new id.
        """
        keys = _box_keys(labels, boxes)
        free: dict[BoxKey, list[int]] = {}
        for i, key in self.boxes.get(name, []):
            free.setdefault(key, []).append(i)
        taken = {i for n, rows in self.boxes.items() if n != name for i, _ in rows}
        ids: list[int | None] = [free[k].pop(0) if free.get(k) else None for k in keys]
        taken |= {i for i in ids if i is not None}
        for j, got in enumerate(ids):
            want = wanted[j] if j < len(wanted) else None
            if got is None and want is not None and want not in taken:
                ids[j] = want
                taken.add(want)
        out: list[int] = []
        for got in ids:
            if got is None:
                got = self.next_annotation_id
                while got in taken:
                    got += 1
                taken.add(got)
            self.next_annotation_id = max(self.next_annotation_id, got + 1)
            out.append(got)
        self.boxes[name] = list(zip(out, keys, strict=True))
        return out
