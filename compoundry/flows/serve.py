"""Serve the platform's Prefect deployments from one long-running process.

`compoundry up` starts this with `python -m compoundry.flows.serve`; each flow run then
appears in the Prefect UI. In production the same flows run from work pools.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from compoundry.config.loader import load_config
from compoundry.config.settings import PlatformSettings
from compoundry.flows.cost_report import cost_report
from compoundry.flows.deploy import deploy_model_version
from compoundry.flows.experiment_flows import (
    evaluate_experiment,
    promote,
    start_experiment,
)
from compoundry.flows.registry_poll import registry_poll
from compoundry.flows.scheduled_warmup import scheduled_warmup


def deployments(settings: PlatformSettings):
    config = load_config(settings.config_dir)
    poll = config.schedules.get("registry-poll")
    poll_kwargs = {"cron": poll.cron} if poll and getattr(poll, "enabled", True) else {}
    return [
        deploy_model_version.to_deployment(
            name="deploy-model-version", tags=["compoundry"],
            description="Deploy a registered MLflow model version as its component's serving deployment.",
        ),
        registry_poll.to_deployment(
            name="registry-poll", tags=["compoundry"],
            description="Deploy versions/alias moves that no webhook announced.", **poll_kwargs,
        ),
        *(d for flow_name in SCHEDULED for d in scheduled_deployments(config, flow_name)),
        *experiment_deployments(),
    ]


#: schedules.yaml ``flow`` -> (flow, tag, what its deployments' descriptions call it)
SCHEDULED = {"scheduled-warmup": (scheduled_warmup, "warm-up", "Scheduled warm-up"),
             "cost-report": (cost_report, "cost", "Scheduled cost report"),
             "evaluate-experiment": (evaluate_experiment, "experiment", "Scheduled experiment evaluation")}


def scheduled_deployments(config, flow_name: str):
    """One deployment per ``flow_name`` entry of schedules.yaml, named after it (``<flow>/<entry>``).

    A disabled entry still becomes a deployment, with its schedule paused, so
    a person can see it in the UI and run it by hand. The entry's
    ``parameters`` are the flow run's.
    """
    fn, tag, what = SCHEDULED[flow_name]
    return [
        fn.to_deployment(
            name=name, tags=["compoundry", tag], parameters=entry.parameters,
            schedule=Cron(entry.cron, timezone=entry.timezone, active=entry.enabled),
            description=f"{what} from configs/schedules.yaml ({entry.cron} {entry.timezone}).",
        )
        for name, entry in config.schedules.items() if entry.flow == flow_name
    ]


def experiment_deployments():
    """start-experiment, evaluate-experiment and promote, run by hand or by `compoundry experiment ...`."""
    return [
        start_experiment.to_deployment(name="start-experiment", tags=["compoundry", "experiment"],
                                       description="Deploy an experiment's variants and start splitting traffic."),
        evaluate_experiment.to_deployment(name="evaluate-experiment", tags=["compoundry", "experiment"],
                                          description="Test the variants; roll back or promote."),
        promote.to_deployment(name="promote", tags=["compoundry", "experiment"],
                              description="Make a variant the component's serving deployment."),
    ]


def main() -> None:
    settings = PlatformSettings.load()
    serve(*deployments(settings), limit=4)


if __name__ == "__main__":
    main()
