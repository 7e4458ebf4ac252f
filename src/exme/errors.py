"""The one exception type for bad user input: the CLI and rule scripts turn it into a clear message."""


class ExmeError(Exception):
    """A user-facing error; its message names the config key, file or tensor at fault."""
