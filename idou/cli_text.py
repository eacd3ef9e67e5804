"""Print user text literally: file names and messages are never read as Rich markup.

A path such as ``[/x]`` crashed the error handler and ``[before]`` vanished from batch errors
when messages went through ``Console.print`` as markup; only the label is styled here.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` styled, then ``message`` as plain text (no markup, no highlighting)."""
    return Text.assemble((label, style), " ", str(message))


def say(console: Any, label: str, style: str, message: object) -> None:
    """Print ``label message`` on ``console`` with the message taken literally."""
    console.print(labelled(label, style, message), highlight=False, soft_wrap=True)


def plain(console: Any, message: object) -> None:
    """Print ``message`` on ``console`` literally (no markup, no highlighting)."""
    console.print(Text(str(message)), highlight=False, soft_wrap=True)
