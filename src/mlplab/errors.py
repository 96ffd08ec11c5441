"""The one user-facing error type.

Anything the user can fix (a bad spec, a flag out of range, a corrupt file, a missing dataset) is raised as
MlplabError with a single-line message that names the problem and the allowed values. The CLI turns it into
`mlplab: error: <message>` on stderr and exit code 2; library callers can catch it like any exception.
"""

from __future__ import annotations


class MlplabError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str):
        # Keep it to one line: the CLI prints it as is, and multi-line messages read like tracebacks.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return self.args[0]


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived where nothing could finish cleanly first: like a second Ctrl-C, an exception
    that only cleanup code catches (a BaseException, as KeyboardInterrupt is), remembering which signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
