"""What a label may hold, checked once for every format; no napari or Qt.

A label (class name, VOC ``pose``, an image file name written into a VOC
file) is one line of text that every format can hold and every reader gives
back: no line break of any kind (``\\n``, ``\\r``, ``\\v``, ``\\f``,
U+001C..U+001E, U+0085, U+2028, U+2029), no other control character (XML
1.0 cannot hold ``\\x01`` even as a reference), no lone surrogate (not
encodable as UTF-8) and not U+FFFE/U+FFFF (not XML characters). Such labels
are refused with the file and line (or element) named, never escaped: no
escape would be read back by the other tools.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import FormatError

__all__ = ["check_label", "label_problem", "text_lines"]

_LINE_BREAKS = "\n\x0b\x0c\r\x1c\x1d\x1e\x85\u2028\u2029"
_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    kind = "a line break" if ch in _LINE_BREAKS else "a control character"
    if "\ud800" <= ch <= "\udfff":
        kind = "a lone surrogate (not valid Unicode text)"
    elif ch in "\ufffe\uffff":
        kind = "a non-character"
    return f"{kind} (U+{ord(ch):04X}{' ' + name if name else ''})"


def label_problem(text: str) -> str | None:
    """What makes ``text`` unfit as a label, or None when it is fine."""
    m = _BAD.search(text) or re.search("[\u2028\u2029]", text)
    return None if m is None else f"{text!r} holds {_describe(m.group())}"


def check_label(text: object, where: str, what: str = "label") -> str:
    """``text`` if it is fit as a label, else :class:`FormatError`.

    ``where`` names the file and the line or element; ``what`` the kind of
    text (``class name``, ``pose``).
    """
    if not isinstance(text, str):
        raise FormatError(f"{where}: {what} is {type(text).__name__}, not text")
    problem = label_problem(text)
    if problem:
        raise FormatError(
            f"{where}: {what} {problem}, which the annotation formats cannot "
            "hold; rename it"
        )
    return text


def text_lines(text: str) -> list[str]:
    """Lines split at ``\\n``, ``\\r\\n`` and ``\\r`` only.

    ``str.splitlines`` also splits at U+2028 and friends, which would turn
    one name into two; here such a character stays in its line (and
    :func:`check_label` refuses it, naming the line).
    """
    return re.split(r"\r\n|\r|\n", text)
