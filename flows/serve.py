"""Serve the platform's Prefect deployments from one long-running process.

`compoundry up` starts this with `python -m flows.serve`; each flow run then
appears in the Prefect UI. In production the same flows run from work pools.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from compoundry.config.loader import load_config
from compoundry.settings import PlatformSettings
from flows.cost_report import cost_report
from flows.deploy import deploy_model_version
from flows.poll import registry_poll
from flows.warmup import scheduled_warmup


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
    ]


#: schedules.yaml ``flow`` -> (flow, tag, what its deployments' descriptions call it)
SCHEDULED = {"scheduled-warmup": (scheduled_warmup, "warm-up", "Scheduled warm-up"),
             "cost-report": (cost_report, "cost", "Scheduled cost report")}


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


def main() -> None:
    settings = PlatformSettings.load()
    serve(*deployments(settings), limit=4)


if __name__ == "__main__":
    main()
