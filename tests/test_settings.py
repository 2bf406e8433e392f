"""Settings: every default is written once, in config/defaults.yaml; the models only check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from config import Settings, load_settings
from config.settings import DEFAULTS_FILE


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every settings model nested in it."""
    found = [model]
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += _sections(field.annotation)
    return found


def test_no_setting_has_a_default_outside_the_defaults_file() -> None:
    with_defaults = [
        f"{model.__name__}.{name}"
        for model in _sections(Settings)
        for name, field in model.model_fields.items()
        if not field.is_required()
    ]
    assert with_defaults == []


def test_the_defaults_file_alone_gives_the_embedded_default() -> None:
    settings = load_settings(env={})
    assert (settings.database_url, settings.inbox, settings.outputs) == (
        "sqlite:///var/gen3d.sqlite3", "var/inbox", "var/outbox",
    )  # fmt: skip
    assert settings.inbox_queue is None
    tree = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert settings.limits.model_dump() == tree["limits"]
    assert settings.runner.model_dump() == tree["runner"]


def test_a_user_file_overrides_one_key_and_keeps_the_others(tmp_path: Path) -> None:
    user = tmp_path / "gen3d.yaml"
    user.write_text("runner:\n  lease_s: 30\n")
    settings = load_settings(env={"GEN3D_CONFIG": str(user)})
    assert settings.runner.lease_s == 30
    assert settings.runner.heartbeat_s == load_settings(env={}).runner.heartbeat_s


def test_bounds_and_unknown_keys_are_still_refused() -> None:
    with pytest.raises(ValidationError, match="lease_s"):
        load_settings(env={}, runner={"lease_s": 0})
    with pytest.raises(ValidationError, match="lease_sec"):
        load_settings(env={}, runner={"lease_sec": 30})
