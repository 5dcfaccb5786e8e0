"""Every error a user can fix, under one base; ``cli.EXIT_CODES`` maps them to exit codes.

Each class names where the problem is (an image, a dataset, the weights, Label Studio,
the workspace, ...) and its message says what to do about it, so the command line
prints it without a traceback. Errors that mean a bug stay plain Python exceptions.
Several also derive from the built-in class callers caught before this base existed
(``ValueError``, ``RuntimeError``), so code written against those keeps working.
"""
from __future__ import annotations

from pathlib import Path


class AlLoopError(Exception):
    """A problem the user can fix; the message says how. ``param`` names the library parameter
    (a setting or argument name, e.g. ``radius_m``) the problem is with, so that the command line
    can add the flag that sets it: the library never speaks of flags."""

    def __init__(self, *args, param: str | None = None):
        super().__init__(*args)
        self.param = param


class UsageError(AlLoopError, ValueError):
    """A request that cannot be carried out as given: an unknown encoder, strategy, precision,
    model or oracle, a decoder trained for another encoder, bad simulation steps, nothing
    labelled to train on."""


class ImageError(AlLoopError, ValueError):
    """A tile that cannot be used; the message names the file and the reason."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ImageTooLarge(ImageError):
    """Over the pixel limit, or a likely decompression bomb."""


class ProductError(AlLoopError, ValueError):
    """A map-projected product (HiRISE RDR, GeoTIFF, ...) that cannot be read or tiled; names the file."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class DatasetError(AlLoopError, ValueError):
    """A YOLO-format dataset that is missing parts or holds unreadable label lines."""


class WeightsError(AlLoopError, RuntimeError):
    """Missing or damaged SAM checkpoint; the message says which command fixes it."""


class InstallError(AlLoopError, FileNotFoundError):
    """A file the installation should have brought is missing (reinstall)."""


class SchemaError(AlLoopError, ValueError):
    """A labelling config this product cannot work with, or a label it does not hold."""


class RegionError(AlLoopError, ValueError):
    """A region (box, point, brush mask) that cannot be used as it is."""


class FetchError(AlLoopError):
    """An image that could not be had; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


class CacheEntryError(AlLoopError, FileNotFoundError):
    """A damaged embedding cache entry (truncated, garbage); it has been removed, and the next
    encoder pass over its tile writes it anew."""


class LabelStudioError(AlLoopError):
    """Label Studio could not be used (unreachable, wrong token, no such project); ``status`` is
    the HTTP status Label Studio answered, None when it did not answer."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class WorkspaceError(AlLoopError):
    """A workspace that is missing, already bound elsewhere, or damaged."""


class DecoderFileError(AlLoopError):
    """A decoder file that is missing, damaged or not a decoder at all; names the file."""


class LoopError(AlLoopError):
    """The active-learning loop cannot go on as asked (nothing labelled yet, tasks deleted, ...)."""


class ServerError(AlLoopError, RuntimeError):
    """A local server (Label Studio, the ML backend) did not start; the message names its log."""
