"""Trust layer: PII masking and content filtering applied to text before any model, log or meter.

Pure stdlib (``re``, ``unicodedata``) so it is cheap on the gateway's request path; see
``docs/decisions/0009-trust-layer.md`` for what is covered and the known limits.
"""

from compoundry.core.trust.filters import BlockedTermsFilter, FilterDecision, normalise
from compoundry.core.trust.hooks import (
    BLOCKED_CONTENT,
    BUILTIN_HOOKS,
    HookOutcome,
    Rejection,
    TrustPipeline,
    TrustReport,
    TrustSettings,
    apply_hooks,
    build_pipeline,
    resolve_hooks,
)
from compoundry.core.trust.masking import (
    ALL_KINDS,
    TOKENS,
    Masker,
    MaskResult,
    iban_valid,
    luhn_valid,
    mask_pii,
)

__all__ = [
    "ALL_KINDS",
    "BLOCKED_CONTENT",
    "BUILTIN_HOOKS",
    "TOKENS",
    "BlockedTermsFilter",
    "FilterDecision",
    "HookOutcome",
    "MaskResult",
    "Masker",
    "Rejection",
    "TrustPipeline",
    "TrustReport",
    "TrustSettings",
    "apply_hooks",
    "build_pipeline",
    "iban_valid",
    "luhn_valid",
    "mask_pii",
    "normalise",
    "resolve_hooks",
]
