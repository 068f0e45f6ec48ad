"""Backbone adapters (one small file per family); importing this package registers them all."""
from deepprompt.models.backbones import bert, deberta, decoder, glm, mpnet  # noqa: F401
from deepprompt.models.backbones.base import BackboneAdapter, adapter_for  # noqa: F401
