"""User-facing errors: one line that names the config key or file:line at fault."""


class DeepPromptError(Exception):
    """An error caused by user input (config, data, paths). The launcher prints it as one line."""


class ConfigError(DeepPromptError):
    """A run-config or DeepSpeed-config value is wrong; the message starts with the key."""


class DataError(DeepPromptError):
    """A data file is malformed; the message starts with file:line (or the example id)."""
