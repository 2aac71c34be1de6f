"""The two metric profiles (docs/scoring.md): ``compat`` computes what the papers' reference scorers
compute, quirks included; ``standard`` applies the corrected rules. A result names its profile and a leaderboard
table never mixes them. The one copy of the names: the benchmark YAML, scoring and the CLI options read it here
(a module without dependencies, so the CLI can build its options without importing the library)."""
from __future__ import annotations

from enum import Enum

from .errors import CvitError


class UnknownProfileError(CvitError, ValueError):
    """A profile name that is neither ``compat`` nor ``standard`` (a user error, and a ``ValueError``)."""


class Profile(str, Enum):
    """A metric profile. A ``str`` subclass whose value is the on-disk name, so results.json, score files and
    comparisons with the plain names are unchanged."""

    COMPAT = "compat"
    STANDARD = "standard"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: str | Profile) -> Profile:
        """The profile named ``value``; an unknown name is refused with the valid ones."""
        try:
            return cls(value)
        except ValueError:
            raise UnknownProfileError(f"unknown profile {value!r}; valid: {', '.join(PROFILES)}") from None


PROFILES: tuple[str, ...] = tuple(p.value for p in Profile)
DEFAULT_PROFILE = Profile.COMPAT
