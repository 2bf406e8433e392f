"""Adapter paths: the registry names each built-in backend by its place in
``adapters/builtin/``, and config files written before the move keep working."""

from __future__ import annotations

import warnings

import pytest

from adapters.base import LEGACY_PATHS, Adapter, load_adapter, load_adapter_class
from config import load_settings


@pytest.mark.parametrize("old", sorted(LEGACY_PATHS))
def test_an_old_builtin_path_loads_the_same_class_and_warns_with_the_new_path(old: str) -> None:
    new = LEGACY_PATHS[old]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls = load_adapter_class(old)
    assert cls is load_adapter_class(new)
    assert [w.category for w in caught] == [FutureWarning]
    message = str(caught[0].message)
    assert new in message and old in message and "\n" not in message


def test_an_old_path_in_a_config_still_runs_its_model() -> None:
    with pytest.warns(FutureWarning, match="adapters.builtin.noop:NoopAdapter"):
        adapter = load_adapter("adapters.builtin_noop:NoopAdapter", "builtin-noop")
    assert type(adapter).__module__ == "adapters.builtin.noop"


def test_the_registry_names_every_builtin_by_its_new_path_without_a_warning() -> None:
    registry = load_settings(env={}).registry
    builtins = [spec for spec in registry.models.values() if spec.id.startswith("builtin-")]
    assert {spec.adapter for spec in builtins} == set(LEGACY_PATHS.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for spec in builtins:
            assert issubclass(load_adapter_class(spec.adapter), Adapter)


def test_adapters_leave_their_tasks_to_the_registry() -> None:
    """A model's tasks are the registry's ``tasks``; a class attribute could only drift."""
    for spec in load_settings(env={}).registry.models.values():
        cls = load_adapter_class(spec.adapter)
        assert not any("tasks" in vars(k) for k in cls.__mro__), spec.adapter
