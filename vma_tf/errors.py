"""The exception types that entry points turn into a one-line error and exit code."""


class UserInputError(ValueError):
    """Bad data or flag values: the message names the problem and is shown as is."""


class StorageError(UserInputError):
    """A file of the run could not be written (a full disk, a read-only folder); the message names
    the path and the cause, and the partial files are already removed."""


class RunDivergedError(RuntimeError):
    """Training stopped after too many non-finite steps in a row; the message names the step."""


class RunInterruptedError(RuntimeError):
    """SIGTERM or SIGINT stopped training after a checkpoint was saved."""

    def __init__(self, signal_number: int, step: int):
        super().__init__(f"stopped by signal {signal_number} at step {step}; checkpoint saved, rerun to resume")
        self.signal_number = signal_number


def require_positive(values: dict[str, int]) -> None:
    """Raises UserInputError naming the first flag (a key such as "--steps") whose value is < 1."""
    for name, value in values.items():
        if value < 1:
            raise UserInputError(f"{name} must be positive, got {value}")
