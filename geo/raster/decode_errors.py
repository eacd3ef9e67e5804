"""Turn GDAL's decoder warnings during a pixel read into a user error.

A damaged tile of a JPEG- (or deflate-, LZW-) compressed GeoTIFF is often decoded anyway: libjpeg
says "Corrupt JPEG data: bad Huffman code" as a *warning*, GDAL returns garbage pixels and
rasterio only logs the message (logger ``rasterio._err``). Scoring those pixels gives false
changes with exit status 0. :func:`refuse_decoder_problems` collects every GDAL warning or
non-fatal error raised on the current thread while its block runs, and raises one sentence
naming the file and the place instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from idou.errors import UserInputError

_LOGGER = "rasterio._err"


class _Collector(logging.Handler):
    """Keeps the ``rasterio._err`` messages of threads that are collecting."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        messages = getattr(self.local, "messages", None)
        if messages is not None:
            messages.append(record.getMessage())


_collector = _Collector()
_install_lock = threading.Lock()


def _install() -> None:
    logger = logging.getLogger(_LOGGER)
    with _install_lock:
        if _collector not in logger.handlers:
            logger.addHandler(_collector)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # GDAL errors that do not raise are logged at INFO


@contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Collect the GDAL warnings and non-fatal errors raised on this thread inside the block."""
    _install()
    outer = getattr(_collector.local, "messages", None)
    messages: list[str] = []
    _collector.local.messages = messages
    try:
        yield messages
    finally:
        _collector.local.messages = outer


@contextmanager
def refuse_decoder_problems(label: str | Callable[[], str], where: str) -> Iterator[None]:
    """Raise a :class:`UserInputError` when GDAL warned while the block read pixels.

    Args:
        label: The file as messages name it, or a function giving it (called only on
            failure, e.g. to find the sheet of a mosaic).
        where: Where it was read (e.g. a window), for the sentence.
    """
    with decoder_messages() as messages:
        yield
    if messages:
        reason = _short(messages[0])
        name = label() if callable(label) else label
        raise UserInputError(
            f"{name} is damaged at {where}: GDAL could not decode its pixels ({reason}); the "
            "file is corrupt, re-copy it or ask for it to be delivered again.")


def _short(message: str) -> str:
    text = message.removeprefix("GDAL signalled an error: ").strip().splitlines()[0]
    return text if len(text) <= 120 else text[:117] + "..."
