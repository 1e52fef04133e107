"""Prefect adapter of the gates: the verdict as a markdown artifact, a failure as a failed flow run."""

from __future__ import annotations

from collections.abc import Iterable

from compoundry.gates.validation import GateResult, render_markdown, require_passed


def publish_gate(results: Iterable[GateResult], *, key: str, title: str) -> None:
    """Write the verdict as a markdown artifact of the current flow run, then raise ``GateFailed`` if any
    suite failed, so the run fails and nothing after this call runs.

    The artifact is written whether or not the gate passed: a reader of a good
    run sees what was checked. ``key`` must be lowercase letters, digits and dashes (Prefect's rule).
    """
    from prefect.artifacts import create_markdown_artifact

    results = list(results)
    failed = not all(r.passed for r in results)
    create_markdown_artifact(key=key, markdown=render_markdown(results, title),
                             description=f"{title}: {'failed' if failed else 'passed'}")
    require_passed(results)
