"""Registration: members carry their own name, so the registered name cannot disagree with it."""
import importlib.metadata
import sys
import types

import pytest

from cvit_bench.errors import CvitError, UnknownNameError
from cvit_bench.registry import Registry


class Thing:
    def __init__(self, name):
        self.name = name


def test_members_register_under_their_own_name():
    reg = Registry("thing")
    a = reg.add(Thing("a"))

    @reg.add
    class B:
        name = "b"

    assert reg.names() == ["a", "b"] and reg.get("a") is a and reg.get("b") is B
    with pytest.raises(UnknownNameError):
        reg.get("c")


def test_a_name_given_apart_is_refused_where_members_name_themselves():
    reg = Registry("metric", key="id")
    with pytest.raises(TypeError, match="own 'id'"):
        reg.add(types.SimpleNamespace(id="x"), "y")
    with pytest.raises(ValueError, match="no 'id'"):
        reg.add(Thing("x"))


def test_twice_under_one_name_is_refused():
    reg = Registry("thing")
    reg.add(Thing("a"))
    with pytest.raises(ValueError, match="'a' registered twice"):
        reg.add(Thing("a"))


def test_plain_values_are_named_at_registration():
    reg = Registry("parser", key=None)

    @reg.register("p")
    def parse(text):
        return text

    reg.add(len, "q")
    assert reg.get("p") is parse and reg.get("q") is len
    with pytest.raises(TypeError, match="needs a name"):
        reg.add(str)


def _plugin(monkeypatch, name, obj_name):
    module = types.ModuleType("cvit_registry_test_plugin")
    module.Thing = type("PluginThing", (), {"name": obj_name})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ep = importlib.metadata.EntryPoint(name, f"{module.__name__}:Thing", "cvit_bench.things")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == "cvit_bench.things" else [])
    return module.Thing


def test_an_entry_point_object_registers_under_its_own_name(monkeypatch):
    thing = _plugin(monkeypatch, "plug", "plug")
    reg = Registry("thing", entry_points="cvit_bench.things")
    assert "plug" in reg and reg.get("plug") is thing


def test_an_entry_point_whose_object_has_another_name_is_refused(monkeypatch):
    _plugin(monkeypatch, "plug", "other")
    reg = Registry("thing", entry_points="cvit_bench.things")
    with pytest.raises(CvitError, match="plugin 'plug' .* whose name is 'other', not 'plug'"):
        reg.get("plug")
