"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""

from __future__ import annotations


class AnatsslError(Exception):
    """Base class: the message names the file / key at fault and what to do about it."""


class ConfigError(AnatsslError, ValueError):
    """A bad configuration key or value."""


class DataError(AnatsslError, ValueError):
    """An unreadable or invalid scan, manifest or data folder."""


class CheckpointError(AnatsslError, ValueError):
    """A checkpoint that is missing, corrupt, or belongs to another model."""


class TrainingError(AnatsslError, RuntimeError):
    """Training cannot continue (e.g. a non-finite loss)."""
