"""The one exception type that entry points turn into a one-line error and exit code."""


class UserInputError(ValueError):
    """Bad data or flag values: the message names the problem and is shown as is."""


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
