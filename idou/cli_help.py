"""Plain ``--help``, read like ``git --help`` or ``gdalwarp --help``: aligned, no type noise.

Typer labels every value with its Python type (``<bool>``, ``<list[Path]>``, ``<int range>``)
and writes required arguments as ``{before}``. :class:`PlainHelpGroup` (the ``idou``
application's group class) rewrites the whole command tree once before it runs: arguments are
named in capitals (``idou detect [OPTIONS] BEFORE AFTER``), option values by a word
(``--output PATH``, ``--threads N``), flags by nothing, and docstring markup (````code````,
``:func:`x```) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args

from typer.core import TyperArgument, TyperGroup, TyperOption

_MARKUP = re.compile(r"(?::[a-z]+:)?`{1,2}([^`]+)`{1,2}")


class _PlainArgument(TyperArgument):
    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper() if self.metavar is None else self.metavar
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self._usage_display_name().strip("[]")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return self.metavar or value_word(self)


def value_word(param: Any) -> str:
    """The word naming an option's value: the choices, PATH, N, NUMBER or TEXT."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:  # a typer that keeps click's types
        return str(getattr(param, "type", "value")).upper()
    if desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if desc.is_path or desc.is_file:
        return "PATH"
    annotation = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    return "TEXT"


def plain_text(text: str | None) -> str | None:
    """A docstring or help text without reStructuredText markup."""
    return None if text is None else _MARKUP.sub(r"\1", text)


def _commands(command: Any) -> Iterator[Any]:
    yield command
    for child in getattr(command, "commands", {}).values():
        yield from _commands(child)


def make_help_plain(root: Any) -> None:
    """Rewrite every command's help and parameters under ``root`` (idempotent)."""
    for command in _commands(root):
        command.help = plain_text(command.help)
        command.short_help = plain_text(command.short_help)
        if hasattr(command, "rich_markup_mode"):
            command.rich_markup_mode = None
        for param in command.params:
            if isinstance(param, TyperArgument):
                param.__class__ = _PlainArgument
            elif isinstance(param, TyperOption):
                param.__class__ = _PlainOption
            if hasattr(param, "help"):
                param.help = plain_text(param.help)


class PlainHelpGroup(TyperGroup):
    """The root group: plain help for itself and every subcommand."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        make_help_plain(self)
        return super().main(*args, **kwargs)
