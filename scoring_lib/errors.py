"""One exception family, so the CLI can turn any of them into a single line and an exit code."""

from __future__ import annotations


class ScoringError(Exception):
    """Base of every error the workbench raises on purpose; the CLI prints it as one line."""

    exit_code = 2


class ConfigError(ScoringError):
    """A setting is out of range or inconsistent; found before any work starts."""


class InputFileError(ScoringError):
    """The input path is missing, a directory or unreadable."""


class OutputError(ScoringError):
    """The output file or the cache cannot be written where asked."""


class MissingDependencyError(ScoringError):
    """An optional extra is not installed; the message names the install command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install -e '.[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ClusterConnectError(ScoringError):
    """An existing Ray cluster could not be joined."""


class GridError(ScoringError):
    """A sweep grid file does not parse or names an unknown parameter."""


class RunInterrupted(ScoringError):
    """The run was stopped by the user (Ctrl-C); the cache keeps what was scored."""

    exit_code = 130


class ReportError(ScoringError):
    """The report has nothing honest to draw: no measured runs, an unknown sweep, or runs against
    different services or time scales that must not share a figure."""
