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


# What Python and the libraries under mlplab raise for a value of the wrong type or shape.
_BAD_INPUT = (TypeError, ValueError, AttributeError, IndexError, KeyError, RuntimeError, OverflowError,
              ZeroDivisionError)


def api_boundary(fn, name: str):
    """The public API's promise (README): bad input raises MlplabError, whatever it is. Each function exported
    by `mlplab` (and each exported class's constructor) is wrapped here: checks where input enters give the
    specific messages; anything else a bad argument sets off deep inside (numpy, torch, scikit-learn) becomes one
    MlplabError line naming the function, with the original exception chained as its cause."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MlplabError:
            raise
        except _BAD_INPUT as exc:
            raise MlplabError(f"mlplab.{name}: invalid input ({type(exc).__name__}: {exc})") from exc

    wrapper.__mlplab_boundary__ = True
    return wrapper
