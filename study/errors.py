"""The one exception type users see: the CLI prints its message and exits non-zero, without a traceback."""


class StudyError(Exception):
    """A problem with the user's input or files, with a message that names it and says how to fix it."""
