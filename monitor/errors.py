"""Our exception types. Errors a user can cause derive from UserError: the CLI
prints their one-line message and exits 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a bad config, a bad price file, an unknown asset."""


class ConfigError(UserError):
    pass


class PriceFileError(UserError):
    pass
