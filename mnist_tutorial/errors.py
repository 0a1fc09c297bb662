"""The package's own errors: each says in one line what is wrong and what to do about it."""

from __future__ import annotations

import errno


class MnistTutorialError(Exception):
    """Base of the errors the package raises for bad input or a bad environment (the command line exits with 2)."""


class ConfigError(MnistTutorialError, ValueError):
    """Raised when a training setting is out of range or cannot be used with this data or machine."""


class ModelOutputError(MnistTutorialError, ValueError):
    """Raised when a model gives NaN or infinite outputs, which are no answer."""


def describe_os_error(error: OSError) -> str:
    """Return what a file-system error means, in a few words (no errno, no repeated path)."""
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
    return reasons.get(error.errno, (error.strerror or type(error).__name__).lower())
