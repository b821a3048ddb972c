"""The kinds of value a setting takes (settings.py): each checks a value given as data (a grid, a
profile, a Python caller) and parses one given as text (the command line), and says in words what
it expects, so every boundary refuses a value with the same one line."""

from __future__ import annotations

import argparse
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .errors import ConfigError
from .redact import safe_url

AUTO = "auto"
MAX_WHOLE = 2**31 - 1  # larger counts are typos or attacks, and overflow sockets, semaphores and C APIs


def _bounded_repr() -> reprlib.Repr:
    """A repr bounded in work: a few lines of YAML aliases (a "billion laughs") make a list whose full
    repr is gigabytes. Containers are cut at 3 levels and 20 items; scalars are left whole (shown cuts
    them at their end). Python 3.11's Repr takes its limits as attributes, not keywords."""
    out = reprlib.Repr()
    out.maxlevel, out.maxdict = 3, 10
    out.maxtuple = out.maxlist = out.maxarray = out.maxset = out.maxfrozenset = out.maxdeque = 20
    out.maxstring = out.maxlong = out.maxother = 10**6
    return out


_REPR = _bounded_repr()


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, bounded in work and in length."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Kind:
    """What values a setting takes; `expected` says so in words for every error message."""

    expected = "a value"

    def valid(self, value: Any) -> bool:
        raise NotImplementedError

    def convert(self, text: str) -> Any:
        """A command-line string as a value of this kind (ValueError if it is not one)."""
        return text

    def normal(self, value: Any) -> Any:
        return value

    def why(self, value: Any) -> str:
        """What `value` should have been: `expected`, or more where it alone does not say (a count past
        the top that applies to every count)."""
        return self.expected

    echo = True  # False: a refused value is never shown (it may be a secret given where a name belongs)

    def check(self, name: str, value: Any) -> Any:
        """`value` if it is of this kind (normalised), else ConfigError naming `name` and the kind."""
        if not self.valid(value):
            got = f", got {shown(safe_url(value) if isinstance(value, str) else value)}" if self.echo else ""
            raise ConfigError(f"{name} must be {self.why(value)}{got}")
        return self.normal(value)

    def parse(self, text: str) -> Any:
        """argparse's `type=`: the value, or a one-line reason."""
        try:
            value = self.convert(text)
        except ValueError:
            value = _INVALID
        if value is _INVALID or not self.valid(value):
            got = f", got {safe_url(text)!r}" if self.echo else ""
            raise argparse.ArgumentTypeError(f"must be {self.why(value)}{got}")
        return self.normal(value)


_INVALID = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Whole(Kind):
    minimum: int = 0
    maximum: int = MAX_WHOLE

    @property
    def expected(self) -> str:  # type: ignore[override]
        top = "" if self.maximum == MAX_WHOLE else f" and at most {self.maximum}"
        return f"a whole number of at least {self.minimum}{top}"

    def why(self, value: Any) -> str:
        if _is_int(value) and value > self.maximum == MAX_WHOLE:
            return f"{self.expected} and at most {MAX_WHOLE}"
        return self.expected

    def valid(self, value: Any) -> bool:
        return _is_int(value) and self.minimum <= value <= self.maximum

    def convert(self, text: str) -> int:
        return int(text)


@dataclass(frozen=True)
class Number(Kind):
    """A finite number: `inf` and `nan` make no timeout, rate or latency (they hang or overflow)."""

    minimum: float = 0.0
    strict: bool = False
    maximum: float | None = None

    @property
    def expected(self) -> str:  # type: ignore[override]
        if self.maximum is not None:
            return f"a number from {self.minimum:g} to {self.maximum:g}"
        return f"a finite number {'above' if self.strict else 'of at least'} {self.minimum:g}"

    def valid(self, value: Any) -> bool:
        if not (_is_int(value) or isinstance(value, float)):
            return False
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            return False
        low_ok = value > self.minimum if self.strict else value >= self.minimum
        return math.isfinite(value) and low_ok and (self.maximum is None or value <= self.maximum)

    def convert(self, text: str) -> float:
        return float(text)


@dataclass(frozen=True)
class Text(Kind):
    pattern: str | None = None
    what: str = "a non-empty string"
    empty: bool = False
    echo: bool = True

    @property
    def expected(self) -> str:  # type: ignore[override]
        return self.what

    def valid(self, value: Any) -> bool:
        return isinstance(value, str) and (self.empty or bool(value)) and (
            self.pattern is None or bool(re.match(self.pattern, value)))


@dataclass(frozen=True)
class Choice(Kind):
    values: tuple[str, ...] = ()

    @property
    def expected(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.values)

    def valid(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values


@dataclass(frozen=True)
class Url(Kind):
    expected = "an http(s) URL"

    def valid(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            parsed = urlparse(value)
            parsed.port  # noqa: B018 - a port that is not a number raises here, not in the client
        except ValueError:
            return False
        return parsed.scheme in ("http", "https") and bool(parsed.hostname)


@dataclass(frozen=True)
class Flag(Kind):
    expected = "true or false"

    def valid(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class OrAuto(Kind):
    """`auto` or a value of `inner`. None is taken as `auto` (the spelling older callers used)."""

    inner: Kind = Whole(0)

    @property
    def expected(self) -> str:  # type: ignore[override]
        return f"'auto' or {self.inner.expected}"

    def why(self, value: Any) -> str:
        return f"'auto' or {self.inner.why(value)}"

    def valid(self, value: Any) -> bool:
        return value == AUTO or value is None or self.inner.valid(value)

    def convert(self, text: str) -> Any:
        return AUTO if text == AUTO else self.inner.convert(text)

    def normal(self, value: Any) -> Any:
        return AUTO if value is None else value


@dataclass(frozen=True)
class Maybe(Kind):
    """None (the setting's documented absence) or a value of `inner`."""

    inner: Kind = Whole(1)

    @property
    def expected(self) -> str:  # type: ignore[override]
        return self.inner.expected

    def why(self, value: Any) -> str:
        return self.inner.why(value)

    def valid(self, value: Any) -> bool:
        return value is None or self.inner.valid(value)

    def convert(self, text: str) -> Any:
        return self.inner.convert(text)
