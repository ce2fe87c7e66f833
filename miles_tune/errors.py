"""The project's own error type for bad input.

Every problem a user can fix (a setting, an argument, a file, a search space) is a
:class:`ConfigError` whose message names what to change; the command lines print it as
one ``error: ...`` line, without a traceback, and a trial that raises it is not retried
(the same input fails the same way). Anything else escaping is a bug.

It subclasses ``ValueError`` so that callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input; the message names the setting, argument or file to change."""
