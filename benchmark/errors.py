"""Errors a user can act on. The command line prints them as one line."""


class BenchmarkError(Exception):
    """Base class: bad input or a broken artifact, with a message naming the
    problem and what is allowed."""


class UnknownNameError(BenchmarkError, KeyError):
    def __init__(self, kind: str, name: str, choices, hint: str = ""):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.choices)}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(BenchmarkError, ValueError):
    """A value outside its allowed range."""


class DataNotFoundError(BenchmarkError, FileNotFoundError):
    """A dataset could not be found or fetched."""


class StoreError(BenchmarkError):
    """An artifact in the store is corrupted or was not written by this suite."""
