"""The one error type of the data stage: a bad input, named with what to do about it."""


class DataError(Exception):
    """A problem with the input data or the data configuration; the message says the fix."""
