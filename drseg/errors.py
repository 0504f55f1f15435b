"""Errors raised on bad input (files, params, checkpoints)."""


class DrsegInputError(ValueError):
    """Bad input: the message names the file or the param and what is wrong."""
