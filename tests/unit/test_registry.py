"""The registry, optional imports, and the promise that ``import abyssal`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from abyssal.core.errors import MissingDependencyError, RegistryError
from abyssal.core.optional import require
from abyssal.core.registry import Registry

MODULE = "tests_unit_registry_lazy_target"  # not a real module: lazy imports are faked below


def test_add_and_get():
    reg: Registry[type] = Registry("model")
    assert reg.add("mlp", dict) is dict
    assert reg.get("mlp") is dict
    assert "mlp" in reg and "other" not in reg


def test_register_decorator():
    reg: Registry[type] = Registry("model")

    @reg.register("net")
    class Net:
        pass

    assert reg.get("net") is Net
    assert list(reg) == ["net"]


def test_duplicate_name_is_an_error():
    reg: Registry[type] = Registry("model")
    reg.add("mlp", dict)
    with pytest.raises(RegistryError, match=r"^model 'mlp' is already registered$"):
        reg.add("mlp", list)
    with pytest.raises(RegistryError, match=r"^model 'mlp' is already registered$"):
        reg.add_lazy("mlp", "collections:OrderedDict")
    assert reg.get("mlp") is dict


def test_duplicate_of_lazy_name_is_an_error():
    reg: Registry[type] = Registry("exporter")
    reg.add_lazy("onnx", "collections:OrderedDict")
    with pytest.raises(RegistryError, match=r"^exporter 'onnx' is already registered$"):
        reg.add("onnx", dict)


@pytest.mark.parametrize("name", ["", None, 3])
def test_name_must_be_a_non_empty_string(name):
    reg: Registry[type] = Registry("model")
    with pytest.raises(RegistryError, match="model name must be a non-empty string, got"):
        reg.add(name, dict)


def test_unknown_name_lists_sorted_choices_eager_and_lazy():
    reg: Registry[type] = Registry("solution")
    reg.add("zeta", dict)
    reg.add_lazy("alpha", "collections:OrderedDict")
    with pytest.raises(RegistryError) as info:
        reg.get("beta")
    assert str(info.value) == "unknown solution 'beta'; choose one of: alpha, zeta"
    assert reg.names() == ["alpha", "zeta"]


def test_unknown_name_in_empty_registry():
    with pytest.raises(RegistryError) as info:
        Registry("solution").get("x")
    assert str(info.value) == "unknown solution 'x'; choose one of: (none registered)"


def test_lazy_entry_imports_on_first_get_only(monkeypatch):
    reg: Registry[type] = Registry("model")
    calls: list[str] = []

    class Fake:
        Thing = object()

    def fake_import(name: str):
        calls.append(name)
        return Fake

    monkeypatch.setattr("importlib.import_module", fake_import)
    reg.add_lazy("thing", f"{MODULE}:Thing")
    assert calls == []  # registering and listing import nothing
    assert reg.names() == ["thing"] and "thing" in reg
    assert reg.get("thing") is Fake.Thing
    assert reg.get("thing") is Fake.Thing
    assert calls == [MODULE]


def test_lazy_entry_real_import():
    from collections import OrderedDict

    reg: Registry[type] = Registry("model")
    reg.add_lazy("od", "collections:OrderedDict")
    assert reg.get("od") is OrderedDict


def test_lazy_target_without_colon_is_an_error():
    reg: Registry[type] = Registry("model")
    with pytest.raises(RegistryError) as info:
        reg.add_lazy("bad", "collections.OrderedDict")
    assert str(info.value) == (
        "lazy model 'bad': target 'collections.OrderedDict' is not 'module:attr'"
    )
    assert "bad" not in reg


def test_lazy_target_missing_module_names_the_module_and_stays_listed():
    reg: Registry[type] = Registry("model")
    reg.add_lazy("ghost", "abyssal_no_such_module_xyz:Thing")
    for _ in range(2):  # a second get retries and fails the same way: the entry did not vanish
        with pytest.raises(MissingDependencyError) as info:
            reg.get("ghost")
        assert str(info.value).startswith(
            "model 'ghost' needs a library that is not installed: "
            "install the module 'abyssal_no_such_module_xyz' ("
        )
        assert isinstance(info.value, ImportError)
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert reg.names() == ["ghost"] and "ghost" in reg


def test_lazy_import_error_names_the_extra_to_install(monkeypatch):
    reg: Registry[type] = Registry("solution")
    reg.add_lazy("fraud", f"{MODULE}:Fraud", extra="fraud", summary="graph fraud")

    def missing_dependency(name: str):
        raise ModuleNotFoundError("No module named 'torch_geometric'", name="torch_geometric")

    monkeypatch.setattr("importlib.import_module", missing_dependency)
    with pytest.raises(MissingDependencyError) as info:
        reg.get("fraud")
    assert str(info.value) == (
        "solution 'fraud' needs a library that is not installed: pip install 'abyssal[fraud]' "
        "(No module named 'torch_geometric')"
    )
    assert "fraud" in reg and reg.summary("fraud") == "graph fraud"


def test_lazy_entry_loads_once_its_dependency_appears(monkeypatch):
    reg: Registry[type] = Registry("model")
    reg.add_lazy("later", f"{MODULE}:Thing", extra="extra")
    installed: list[bool] = []

    class Fake:
        Thing = object()

    def import_module(name: str):
        if not installed:
            raise ImportError("not yet", name=name)
        return Fake

    monkeypatch.setattr("importlib.import_module", import_module)
    with pytest.raises(MissingDependencyError, match=r"abyssal\[extra\]"):
        reg.get("later")
    installed.append(True)
    assert reg.get("later") is Fake.Thing


def test_summaries_are_listed_without_importing(monkeypatch):
    reg: Registry[type] = Registry("solution")

    def no_imports(name: str):
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr("importlib.import_module", no_imports)
    reg.add_lazy("fraud", f"{MODULE}:Fraud", summary="graph fraud detection")
    reg.add_lazy("bare", f"{MODULE}:Bare")
    reg.add("eager", dict, summary="an eager one")
    assert [(n, reg.summary(n)) for n in reg] == [
        ("bare", ""),
        ("eager", "an eager one"),
        ("fraud", "graph fraud detection"),
    ]
    with pytest.raises(RegistryError, match=r"unknown solution 'nope'; choose one of: bare, eager"):
        reg.summary("nope")


def test_lazy_target_missing_attribute_is_a_registry_error_naming_it():
    reg: Registry[type] = Registry("model")
    reg.add_lazy("ghost", "collections:NoSuchThing")
    with pytest.raises(RegistryError, match="module 'collections' has no attribute 'NoSuchThing'"):
        reg.get("ghost")
    assert "ghost" in reg


# --- optional imports -----------------------------------------------------------------------------


def test_require_returns_the_module():
    import json as json_module

    assert require("json", extra="base") is json_module


def test_require_missing_module_names_the_extra():
    with pytest.raises(MissingDependencyError) as info:
        require("abyssal_no_such_module_xyz", extra="fraud", purpose="ring cycles")
    msg = str(info.value)
    assert msg.startswith(
        "'abyssal_no_such_module_xyz' is needed for ring cycles but is not installed: "
        "pip install 'abyssal[fraud]' ("
    )
    assert isinstance(info.value, ImportError)  # callers may catch ImportError
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_require_without_purpose():
    with pytest.raises(MissingDependencyError) as info:
        require("abyssal_no_such_module_xyz", extra="parquet")
    assert str(info.value).startswith(
        "'abyssal_no_such_module_xyz' is needed but is not installed: "
        "pip install 'abyssal[parquet]'"
    )


# --- import weight --------------------------------------------------------------------------------

HEAVY = ("torch", "pandas", "torch_geometric", "sklearn")


def loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules it left in ``sys.modules``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY}}}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_abyssal_imports_no_heavy_library():
    loaded = loaded_after("import abyssal")
    assert loaded == dict.fromkeys(HEAVY, False)


def test_listing_solutions_imports_no_heavy_library():
    loaded = loaded_after(
        "import abyssal.solutions as s\nassert 'fraud' in s.SOLUTIONS.names(), s.SOLUTIONS.names()"
    )
    assert loaded["torch_geometric"] is False
    assert loaded == dict.fromkeys(HEAVY, False)
