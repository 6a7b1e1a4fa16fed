"""Make docs/evaluate_iou_histogram.png and docs/evaluate_actions_curve.png.

Runs ``napari-samboxes evaluate`` on the plugin's sample photo
(scikit-image's coffee) with a ground truth written as LabelImg writes
Pascal VOC (``coffee.xml`` below: five boxes drawn by hand), comparing 8
and 16 points per side, and copies the two plots here. Without
``--checkpoint`` it uses the structured test checkpoint (written to a
temporary folder), so the figures measure the tool, not SAM; give the real
``mobile_sam.pt`` to measure SAM.

    python docs/make_evaluate_plots.py [--checkpoint mobile_sam.pt]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

#: Five objects of the coffee photo (600 x 400), as LabelImg saves them.
COFFEE_XML = """<annotation>
\t<folder>images</folder>
\t<filename>coffee.png</filename>
\t<path>/home/annotator/images/coffee.png</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>600</width>
\t\t<height>400</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
OBJECTS = {
    "cup": (174, 18, 413, 306),
    "handle": (200, 231, 258, 306),
    "coffee": (204, 96, 371, 198),
    "spoon": (321, 66, 426, 326),
    "saucer": (77, 72, 481, 388),
}
OBJECT = """\t<object>
\t\t<name>{}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{}</xmin>
\t\t\t<ymin>{}</ymin>
\t\t\t<xmax>{}</xmax>
\t\t\t<ymax>{}</ymax>
\t\t</bndbox>
\t</object>
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the structured test checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", default="points_per_side=8,16")
    args = p.parse_args()

    from PIL import Image
    from skimage import data

    from napari_samboxes.cli import main as cli
    from napari_samboxes.testing import write_structured_checkpoint

    docs = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "images").mkdir()
        Image.fromarray(data.coffee()).save(t / "images" / "coffee.png")
        objects = "".join(OBJECT.format(k, *v) for k, v in OBJECTS.items())
        (t / "coffee.xml").write_text(COFFEE_XML.format(objects=objects))
        ckpt = args.checkpoint or str(write_structured_checkpoint(t / "structured.pt"))
        code = cli(
            [
                "evaluate",
                str(t / "images"),
                "--gt",
                str(t / "coffee.xml"),
                "--format",
                "voc",
                "--checkpoint",
                ckpt,
                "--device",
                args.device,
                "--cache",
                str(t / "cache"),
                "--compare",
                args.compare,
                "--out",
                str(t / "out"),
            ]
        )
        if code:
            return code
        for name in ("evaluate_iou_histogram.png", "evaluate_actions_curve.png"):
            shutil.copyfile(t / "out" / name, docs / name)
            print(f"wrote {docs / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
