"""The configuration of a compoundry platform: ``configs/*.yaml`` as validated pydantic models.

Use :func:`load_config` to read a whole config directory (every problem of every
file reported at once, with file and line), or :func:`load_model_file` for one file.
"""

from compoundry.config.loader import (
    ConfigError,
    ConfigIssue,
    load_config,
    load_model_file,
)
from compoundry.config.models import (
    KNOWN_FLOWS,
    Breaker,
    Component,
    Config,
    Experiment,
    Fallback,
    Pipeline,
    Prices,
    Scaling,
    Schedule,
    Shadow,
    Step,
    Timeouts,
    Variant,
)

__all__ = [
    "KNOWN_FLOWS", "Breaker", "Component", "Config", "ConfigError", "ConfigIssue", "Experiment", "Fallback",
    "Pipeline", "Prices", "Scaling", "Schedule", "Shadow", "Step", "Timeouts", "Variant",
    "load_config", "load_model_file",
]
