"""Settings (defaults, ``GEN3D_CONFIG`` YAML, ``GEN3D_*`` env) and the model registry."""

from config.registry import ModelSpec, Registry
from config.settings import Settings, load_settings

__all__ = ["ModelSpec", "Registry", "Settings", "load_settings"]
