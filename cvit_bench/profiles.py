"""The two metric profiles (docs/scoring.md): ``compat`` computes what the papers' reference scorers
compute, quirks included; ``standard`` applies the corrected rules. A result names its profile and a leaderboard
table never mixes them. The one copy of the names: the benchmark YAML, scoring and the CLI options read it here
(a module without dependencies, so the CLI can build its options without importing the library)."""
from __future__ import annotations

PROFILES: tuple[str, ...] = ("compat", "standard")
DEFAULT_PROFILE = "compat"
