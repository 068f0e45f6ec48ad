"""The original GLM, implemented natively: config + presets, model, checkpoint loading, tokenizers."""
from deepprompt.models.glm.config import PRESETS, GLMConfig  # noqa: F401
from deepprompt.models.glm.model import GLMModel  # noqa: F401
