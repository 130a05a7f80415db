"""The project's own errors: what a user or an operator can act on, each with a message that says what to do.

Everything embedstream raises on purpose derives from ``EmbedstreamError``. The CLI prints these as one line
and exits 2, and the API maps them to 4xx/503 ``Problem`` answers; anything else is a bug and surfaces as a
traceback (CLI) or a 500 (API), never as a polite "user error". The second base of each subclass keeps the
usual Python meaning (``LookupError`` for "no such thing"), so generic callers still catch them naturally.
"""

from __future__ import annotations


class EmbedstreamError(Exception):
    """Base of every deliberate error: a user, configuration or environment problem, never a bug."""


class UsageError(EmbedstreamError, ValueError):
    """A request that cannot be served as given: bad arguments, a query that does not fit the collection."""


class NotFoundError(EmbedstreamError, LookupError):
    """A named thing does not exist: a point id, a catalog model, a file or folder given on the command line."""


class SettingsError(EmbedstreamError, ValueError):
    """The settings (file, environment or overrides) do not validate; the message names the setting."""


class ConflictError(EmbedstreamError):
    """A request that clashes with work under way (a migration's backfill still running); retry once it ends."""
