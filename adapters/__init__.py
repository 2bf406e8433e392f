"""Model adapters: one module per model family behind the interface in ``adapters.base``.

Importing this package imports no model code; ``adapters.load_adapter`` imports the one
module the registry names, and heavy libraries are imported inside ``Adapter.load``.
"""

from adapters.base import Adapter, Artifact, Item, ModelUnavailable, Result, load_adapter

__all__ = ["Adapter", "Artifact", "Item", "ModelUnavailable", "Result", "load_adapter"]
