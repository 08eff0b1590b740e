"""The one exception type users see: the CLI prints its message and exits non-zero, without a traceback."""

import reprlib


class StudyError(Exception):
    """A problem with the user's input or files, with a message that names it and says how to fix it."""


_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 6, 6, 50, 50, 30


def shown(value: object) -> str:
    """A value as a message shows it: its repr, cut short (a message is one line, and a value can be huge)."""
    return _SHORT.repr(value)
