"""Data gates: Great Expectations suites that stop a flow before it runs on bad data (docs/cost-reports.md)."""

from compoundry.gates.validation import (
    ExpectationFailure,
    GateFailed,
    GateResult,
    render_markdown,
    require_passed,
    validate_frame,
)

__all__ = ["ExpectationFailure", "GateFailed", "GateResult", "render_markdown", "require_passed", "validate_frame"]
