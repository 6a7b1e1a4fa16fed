"""What export and import share: format and layout names, the summary.

No napari or Qt. The work is in :mod:`napari_samboxes.export` and
:mod:`napari_samboxes.importing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FORMATS", "LAYOUTS", "ConvertSummary", "check_format", "check_layout"]

#: Names accepted by ``fmt``.
FORMATS = ("yolo", "yolo-seg", "voc", "coco")
#: Each format's layouts; the first is the default.
LAYOUTS = {
    "yolo": ("ultralytics",),
    "yolo-seg": ("ultralytics",),
    "voc": ("flat", "devkit"),
    "coco": ("flat", "subsets"),
}


@dataclass
class ConvertSummary:
    """What an export or import did.

    Attributes
    ----------
    images : int
        Images written (export) or box tables written (import).
    boxes : int
        Boxes written.
    skipped : int
        Images (export) or source files/images (import) left out.
    failed : int
        Images that could not be read (export): reported, left out; the
        command then exits with 1.
    messages : list of str
        One sentence per thing worth knowing (what was skipped and why).
    """

    images: int = 0
    boxes: int = 0
    skipped: int = 0
    failed: int = 0
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.images} images, {self.boxes} boxes, {self.skipped} skipped"
        return text + (f", {self.failed} failed" if self.failed else "")


def check_format(fmt: str) -> str:
    """``fmt`` in lower case, if it is one of :data:`FORMATS`."""
    low = fmt.lower()
    if low not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return low


def check_layout(fmt: str, layout: str | None, split: bool) -> str:
    """The layout to write (``layout`` or the format's default).

    Raises
    ------
    ValueError
        For a layout the format has not, or a split with a flat layout.
    """
    choices = LAYOUTS[fmt]
    chosen = choices[0] if layout is None else layout.lower()
    if chosen not in choices:
        raise ValueError(
            f"--layout {layout} is not one of {fmt}'s: {', '.join(choices)}"
        )
    if split and chosen == "flat":
        raise ValueError(
            f"--split needs subsets: use --layout {choices[1]} with --format {fmt}"
        )
    return chosen
