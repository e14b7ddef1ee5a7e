"""The plugin's one error for bad input, in a leaf module: settings (``config``) and the checks of
the standard ``OTEL_*`` variables (``telemetry/otel_env``) both raise it without importing each other."""


class SettingsError(ValueError):
    """A ``VLLM_W2EXT_*`` (or checked ``OTEL_*``) variable holds a value the plugin cannot use."""
