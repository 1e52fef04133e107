"""``POST /v1/feedback``: a user's judgement of a request, the success metric of A/B experiments.

Feedback is keyed by the request id the gateway returned (``X-Request-Id`` /
``request_id``) and stored with the caller's tenant; ``evaluate-experiment``
joins it with the metering rows of the same tenant, so one tenant cannot score
another's requests. The id is not checked against metering here (metering is
written in batches, moments later); feedback for an id that never matches is
kept and simply never counted.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from compoundry.store.experiment_runs import ExperimentStore

router = APIRouter(tags=["experiments"])


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=100, description="the request id the gateway returned")
    name: str = Field("feedback", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                      description="the metric, as an experiment's metric.name refers to it")
    value: float = Field(allow_inf_nan=False, description="1/0 (or true/false) for binary metrics, a number "
                                                          "for continuous ones")
    comment: str | None = Field(None, max_length=2000)


class FeedbackAccepted(BaseModel):
    feedback_id: str
    request_id: str
    name: str


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted,
             summary="Record feedback on a request (thumbs up/down, a rating) for experiments")
async def post_feedback(body: FeedbackRequest, request: Request) -> dict:
    principal = getattr(request.state, "principal", None)
    tenant = principal.tenant if principal else "anonymous"
    store = ExperimentStore(request.app.state.store)
    feedback_id = await asyncio.to_thread(store.add_feedback, body.request_id, tenant, body.name, body.value,
                                          body.comment)
    return {"feedback_id": feedback_id, "request_id": body.request_id, "name": body.name}
