"""One sanitiser for every string read from a file that reaches a message or a log.

Names of datasets, attributes and stored values come from files anyone may have written:
an escape sequence in one (``ESC]0;...BEL``, ``ESC[2J``) would retitle or clear the
user's terminal if printed raw.  :func:`printable` shows such characters as escapes and
bounds the length, so a hostile file can neither drive the terminal nor flood it.
"""

from __future__ import annotations

import unicodedata

# Stored strings quoted in one-line messages are cut to this many characters.
DEFAULT_LIMIT = 200


def printable(value: object, limit: int | None = DEFAULT_LIMIT, *, mark: str | None = None) -> str:
    """``str(value)`` fit to print: control and format characters escaped, cut to ``limit``.

    Control characters (C0, C1, DEL), format characters (bidirectional overrides) and
    unpaired surrogates become ``\\xNN`` / ``\\uNNNN`` escapes, or ``mark`` when given
    (``"?"`` in summaries meant to be read, not copied); ``limit=None`` keeps the whole text.
    """
    text = str(value)
    if not _needs_escaping(text):
        pieces = text
    else:
        pieces = "".join((mark if mark is not None else _escape(c)) if _unsafe(c) else c for c in text)
    if limit is not None and len(pieces) > limit:
        return pieces[: max(0, limit - 3)] + "..."
    return pieces


def _needs_escaping(text: str) -> bool:
    return not (text.isprintable() and text.isascii()) and any(_unsafe(c) for c in text)


def _unsafe(character: str) -> bool:
    if character == " ":
        return False
    return unicodedata.category(character) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
