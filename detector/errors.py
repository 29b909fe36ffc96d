"""User-facing errors: the CLI prints their message alone (no traceback) and exits with status 2."""


class DetectorError(Exception):
    """A problem with the user's input (file, config, data, checkpoint) explained in its message."""
