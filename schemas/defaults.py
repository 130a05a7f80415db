"""Defaults that more than one place relies on, defined once.

The settings (``schemas.settings``) use them as their defaults; the envelope's ``Limits``, the API's request
bodies and the encoders' own batching (when called outside the pipeline) use the same numbers, so a change
here changes them all.
"""

MAX_EVENT_BYTES = 8 * 1024 * 1024  # an event's value, and an uploaded query file
MAX_TEXT_CHARS = 1_000_000  # a text event's text: a long document is chunked, its cost grows with its length
MAX_QUERY_CHARS = 16_384  # a text query
MAX_BATCH_TOKENS = 1024  # padded tokens per text encoder run; more is slower per token on a CPU (text_batches.md)
MAX_BATCH_SIZE = 64  # texts per text encoder run
MEDIA_BATCH_SIZE = 8  # pictures or sound clips per encoder run (no gain above 8 on 2 cores)
