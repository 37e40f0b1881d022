"""Errors the scripts turn into one-line messages and exit statuses (the romancal
documentation, section "Exit Status")."""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_NO_SCIENCE_DATA = 64


class PipelineError(Exception):
    """An expected failure: bad input, bad parameter, missing reference. Exit status 1."""


class InputFileError(PipelineError):
    """A file that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ParameterError(PipelineError):
    """An unknown parameter or a value of the wrong type."""


class NoScienceDataError(PipelineError):
    """The input holds no science data (exit status 64, as strun's)."""

