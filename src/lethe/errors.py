"""The one exception type Lethe raises for bad input.

The CLI catches :class:`LetheError` and prints ``error: <message>`` on one line (exit code 2), so every
message must name the problem (the file, the field, the value) without needing a traceback.
"""


class LetheError(Exception):
    """A user-facing error: bad config, bad data, missing file, impossible request."""
