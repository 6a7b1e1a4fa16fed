"""Annotation file formats: the box table, YOLO, Pascal VOC and COCO.

One module per format, each with a reader and a writer; no napari or Qt.
"""
