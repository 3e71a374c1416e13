"""The one exception type that entry points turn into a one-line error and exit code."""


class UserInputError(ValueError):
    """Bad data or flag values: the message names the problem and is shown as is."""
