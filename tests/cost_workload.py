"""A small fixed workload whose costs are worked out by hand (docs/cost-reports.md, "Checking the numbers").

Window 00:00–02:00 UTC (2 h). Components (see COMPONENTS_YAML):

* ``llm`` dedicated, 2.00/replica-hour, 0.002 per 1k tokens (its pay-per-use tariff, not billed while dedicated)
* ``emb`` serverless, 0.0001 per call (its replica r5 runs but is not billed by time)
* ``clf`` auto, 1.00/replica-hour, 0.001 per call (spill-over to its external endpoint is per call)

Replicas inside the window: llm r1 all 2 h + r2 30 min = 9000 s -> 5.00; clf-v1 r3 30 min -> 0.50,
shared by its one call; clf-v2 r4 30 min of the window and no call -> 0.50 idle.

llm's 5.00 is shared by compute ms (900 + 1800 + 300 + 1000 = 4000):
rag/acme 1.125, rag/beta 2.25, triage/acme 1.625.

Hand-computed totals: rag 3.3752, triage 2.126, (idle) 0.5, (direct) 0; overall 6.0012.
All-serverless: emb 2 x 0.0001 + llm 650 tokens x 0.002/1k + clf 2 x 0.001 = 0.0035
(rag 0.0002 + 400 tokens 0.0008 = 0.001; triage 0.002 + 250 tokens 0.0005 = 0.0025).
All-dedicated: one replica each for 2 h: llm 4.00 + emb 0.80 + clf 2.00 = 6.80
(rag 2.70 + 0.80 = 3.50, triage 1.30 + 2.00 = 3.30).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from compoundry.config.models import Prices
from compoundry.core.costs.cost_model import ReplicaInterval, Tariff
from compoundry.core.costs.records import SHED, MeteringRecord

SINCE = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=2)

COMPONENTS_YAML = """
components:
  llm:
    model: m-llm
    engine: llm
    mode: dedicated
    scaling: {min_replicas: 1, max_replicas: 2, target_concurrency: 4}
    prices: {replica_hour: 2.00, per_call: 0.0, per_1k_tokens: 0.002}
  emb:
    model: m-emb
    engine: sentence-transformers
    mode: serverless
    prices: {replica_hour: 0.40, per_call: 0.0001}
  clf:
    model: m-clf
    engine: pyfunc
    mode: auto
    prices: {replica_hour: 1.00, per_call: 0.001}
"""

PIPELINES_YAML = """
pipelines:
  rag:
    steps:
      embed: {component: emb}
      answer: {component: llm, depends_on: [embed]}
  triage:
    steps:
      classify: {component: clf}
      answer: {component: llm, depends_on: [classify]}
"""

DEPS = {"rag": {"embed": [], "answer": ["embed"]}, "triage": {"classify": [], "answer": ["classify"]}}


def at(minutes: float, ms: float = 0.0) -> datetime:
    return SINCE + timedelta(minutes=minutes, milliseconds=ms)


def call(when: datetime, pipeline: str, request: str, step: str | None, component: str, mode: str, **kw
         ) -> MeteringRecord:
    deployment = kw.pop("deployment_id", f"{component}-v1")
    return MeteringRecord(timestamp=when, tenant=kw.pop("tenant", "acme"), pipeline_id=pipeline, request_id=request,
                          step=step, component=component, variant=kw.pop("variant", "champion"),
                          deployment_id=deployment, mode=mode, latency_class="interactive", **kw)


def records() -> list[MeteringRecord]:
    return [
        call(at(10), "rag", "r-1", "embed", "emb", "serverless", compute_ms=100, cost=0.0001),
        call(at(10, 100), "rag", "r-1", "answer", "llm", "dedicated", compute_ms=900, prompt_tokens=100,
             completion_tokens=50, cost=0.0003),
        call(at(20), "rag", "r-2", "embed", "emb", "serverless", tenant="beta", cold_start_ms=300, compute_ms=200,
             cost=0.0001),
        call(at(20, 500), "rag", "r-2", "answer", "llm", "dedicated", tenant="beta", compute_ms=1800,
             prompt_tokens=200, completion_tokens=50, cost=0.0005),
        call(at(70), "triage", "t-1", "classify", "clf", "auto", compute_ms=400, cost=0.001),
        call(at(70, 400), "triage", "t-1", "answer", "llm", "dedicated", compute_ms=300, prompt_tokens=80,
             completion_tokens=20, cost=0.0002),
        call(at(80), "triage", "t-2", "classify", "clf", "external", deployment_id="external:clf", compute_ms=600,
             cost=0.001),
        call(at(80, 600), "triage", "t-2", "answer", "llm", "dedicated", compute_ms=1000, prompt_tokens=100,
             completion_tokens=50, cost=0.0003),
        call(at(90), "", "d-1", None, "emb", "serverless", tenant="beta", outcome=SHED),
    ]


def intervals() -> list[ReplicaInterval]:
    return [
        ReplicaInterval("r1", "llm-v1", "llm", SINCE - timedelta(hours=1), None),
        ReplicaInterval("r2", "llm-v1", "llm", at(30), at(60)),
        ReplicaInterval("r3", "clf-v1", "clf", at(60), at(90)),
        ReplicaInterval("r4", "clf-v2", "clf", at(90), UNTIL + timedelta(hours=1)),
        ReplicaInterval("r5", "emb-v1", "emb", SINCE, UNTIL),
    ]


def tariffs() -> dict[str, Tariff]:
    """The same as COMPONENTS_YAML, without reading it."""
    return {"llm": Tariff("dedicated", Prices(replica_hour=2.0, per_1k_tokens=0.002), 1, 4),
            "emb": Tariff("serverless", Prices(replica_hour=0.4, per_call=0.0001), 0, 8),
            "clf": Tariff("auto", Prices(replica_hour=1.0, per_call=0.001), 0, 8)}
