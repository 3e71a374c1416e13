"""The one exception type that entry points turn into a one-line error and exit code."""


class UserInputError(ValueError):
    """Bad data or flag values: the message names the problem and is shown as is."""


def require_positive(values: dict[str, int]) -> None:
    """Raises UserInputError naming the first flag (a key such as "--steps") whose value is < 1."""
    for name, value in values.items():
        if value < 1:
            raise UserInputError(f"{name} must be positive, got {value}")
