"""The package's own errors: each says in one line what is wrong and what to do."""

from __future__ import annotations

import errno


class MnistTutorialError(Exception):
    """Base of the errors the package raises for bad input or a bad environment.

    The command line exits with 2 on any of them.
    """


class ConfigError(MnistTutorialError, ValueError):
    """Raised when a training setting cannot be used.

    It is out of range, or cannot be used with this data or on this machine.
    """


class ModelOutputError(MnistTutorialError, ValueError):
    """Raised when a model gives NaN or infinite outputs, which are no answer."""


def describe_os_error(error: OSError) -> str:
    """Return what a file-system error means in a few words, without errno or path."""
    reasons = {
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder",
        errno.ENAMETOOLONG: "a name in the path is too long for the file system",
        errno.ELOOP: "a loop of symbolic links, or too many of them",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "no space left on the device",
    }
    if error.errno is not None and error.errno in reasons:
        return reasons[error.errno]
    return (error.strerror or type(error).__name__).lower()


def first_line(error: BaseException, limit: int = 120) -> str:
    """Return the first line of an error's message (else its type), cut to ``limit``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]
