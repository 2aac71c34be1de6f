import json

import pytest

from cvit_bench.profiles import DEFAULT_PROFILE, PROFILES, Profile


def test_profile_values_are_the_on_disk_names():
    assert PROFILES == ("compat", "standard") and DEFAULT_PROFILE == "compat"
    for name in PROFILES:
        p = Profile.parse(name)
        assert p == name and str(p) == name and f"{p}" == name and Profile.parse(p) is p
        assert json.dumps({"profile": p, p: 1}) == json.dumps({"profile": name, name: 1})


def test_unknown_profile_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown profile 'robust'; valid: compat, standard"):
        Profile.parse("robust")
