"""YAML read safely: a size limit, no aliases, no tags; no napari or Qt.

A dataset's ``data.yaml`` is a few hundred bytes of plain mappings and
lists. Anchors and aliases are refused (a 500-byte "billion laughs" file
otherwise expands to gigabytes), so is any file over :data:`MAX_BYTES`, and
only the safe loader's types are built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import FormatError

__all__ = ["MAX_BYTES", "dump_data_yaml", "load_yaml"]

#: The largest YAML file read (1 MiB).
MAX_BYTES = 1 << 20


def _loader() -> type:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """The safe loader, refusing anchors and aliases."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: aliases (*name) are not allowed"
                )
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise yaml.YAMLError(
                    f"line {event.start_mark.line + 1}: anchors (&{anchor}) "
                    "are not allowed"
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_yaml(path: str | Path, max_bytes: int = MAX_BYTES) -> Any:
    """The document in a YAML file, read safely (see the module docstring).

    Raises
    ------
    FormatError
        Naming the file: too large, not UTF-8, not YAML, aliases, deeper
        nesting than Python allows.
    """
    import yaml

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise FormatError(f"{path}: larger than {max_bytes} bytes; not read")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text ({e})") from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - safe loader
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())
        raise FormatError(f"{path}: not a plain YAML file ({first})") from None
    except RecursionError:
        raise FormatError(f"{path}: nested too deeply") from None


def _scalar(v: object) -> str:
    """A double-quoted YAML scalar (JSON's escapes are YAML's too; text
    outside ASCII stays as it is, UTF-8, as a surrogate pair escape would
    not be read back)."""
    return json.dumps(str(v), ensure_ascii=False)


def dump_data_yaml(
    root: str | Path, subsets: Mapping[str, str], names: Sequence[str]
) -> str:
    """The text of an Ultralytics ``data.yaml``.

    ``root`` becomes ``path`` (absolute, as Ultralytics resolves a relative
    one against its own datasets folder); ``subsets`` maps ``train``,
    ``val`` and ``test`` to image folders relative to it; ``names`` are the
    class names in id order.
    """
    lines = [
        "# written by napari-samboxes",
        f"path: {_scalar(Path(root).resolve())}",
    ]
    lines += [f"{k}: {_scalar(v)}" for k, v in subsets.items()]
    lines.append(f"nc: {len(names)}")
    lines.append("names:")
    lines += [f"  {i}: {_scalar(n)}" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"
