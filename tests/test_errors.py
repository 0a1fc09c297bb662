"""Tests of mnist_tutorial.errors: one family of errors, each said in one line."""

from __future__ import annotations

import errno

import pytest

from mnist_tutorial.errors import (
    ConfigError,
    MnistTutorialError,
    ModelOutputError,
    describe_os_error,
    first_line,
)


def test_the_errors_are_the_packages_and_the_matching_builtin() -> None:
    for error in (ConfigError, ModelOutputError):
        assert issubclass(error, MnistTutorialError) and issubclass(error, ValueError)


def _error(message: str) -> Exception:
    """Return a KeyError whose str() is ``message`` (KeyError's own adds quotes)."""

    class Error(KeyError):
        def __str__(self) -> str:
            return message

    Error.__name__ = "KeyError"
    return Error()


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("one line", "one line"),
        (
            "\n\n  the first that says something  \nthe second",
            "the first that says something",
        ),
        ("", "KeyError"),
        ("  \n \t\n", "KeyError"),
    ],
)
def test_first_line_is_the_first_non_empty_line_or_the_type(
    message: str, line: str
) -> None:
    assert first_line(_error(message)) == line


def test_first_line_is_cut_to_its_limit() -> None:
    assert first_line(ValueError("x" * 500)) == "x" * 120
    assert first_line(ValueError("abcdef"), limit=3) == "abc"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOENT, "no such file or folder"),
        (errno.ENOTDIR, "a part of the path is a file, not a folder"),
        (errno.EISDIR, "it is a folder"),
        (errno.ENAMETOOLONG, "a name in the path is too long for the file system"),
        (errno.ELOOP, "a loop of symbolic links, or too many of them"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.EROFS, "the file system is read-only"),
        (errno.ENOSPC, "no space left on the device"),
    ],
)
def test_describe_os_error_says_what_it_means_without_errno_or_path(
    code: int, reason: str
) -> None:
    error = OSError(code, "Strerror Text", "/some/path")
    assert describe_os_error(error) == reason


def test_describe_os_error_falls_back_to_the_systems_words_or_the_type() -> None:
    assert describe_os_error(OSError(errno.EIO, "Input/output error")) == (
        "input/output error"
    )
    assert describe_os_error(TimeoutError()) == "timeouterror"
