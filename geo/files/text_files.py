"""Read the text files users write (sheet lists, FLIGHT.toml, training configs) as a Japanese
office writes them: UTF-8 with or without a BOM, UTF-16 with a BOM (Notepad's "Unicode"), or
Shift_JIS (CP932); CRLF or LF line ends.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from idou.errors import UnreadableInput

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def read_text(path: str | Path, what: str = "text file") -> str:
    """The text of ``path`` with universal newlines, decoded from UTF-8/UTF-16 (by BOM) or CP932.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. "sheet list").

    Raises:
        UserInputError: the bytes are neither UTF-8 nor Shift_JIS (CP932).
    """
    path = Path(path)
    raw = path.read_bytes()
    encodings = [enc for bom, enc in _BOMS if raw.startswith(bom)][:1] or ["utf-8", "cp932"]
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise UnreadableInput(f"{what} {path.name} is neither UTF-8 nor Shift_JIS (CP932) text; "
                          "save it again as UTF-8 (or Shift_JIS) in a text editor.")
