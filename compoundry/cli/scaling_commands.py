"""`compoundry plan warmup` and `compoundry warmup ...`: what keeping components warm costs, and doing it.

``plan warmup PIPELINE`` prints, for each provisioning choice, the standing
cost and the worst first-request delay after everything idled (pure:
``compoundry.core.autoscaling.warmup_plans``). Cold starts are the platform's measured ones
(median seconds to ready of each component's recent replicas) where it has
them, else the component's configured ``timeouts.cold_start_s`` (an upper
bound), and the table says which. ``plan scaling`` prints each component's
bounds and the scale-down window the autoscaler applies: the configured
``autoscaler.down_stabilization_s``, or k of those cold starts when longer.
"""

from __future__ import annotations

import json
from datetime import timedelta

import typer
from rich.table import Table

from compoundry.cli.common import config_and_store, console, fail, load_settings
from compoundry.core.autoscaling.replica_policy import (
    COLD_STARTS_PER_DOWN_WINDOW,
    cold_start_s,
    down_window_s,
)

plan_app = typer.Typer(help="Plan capacity before changing it.", no_args_is_help=True)
warmup_app = typer.Typer(help="Hold min replicas now (a scheduled warm-up, by hand).", no_args_is_help=True)


def cold_starts(config, pipeline, measured: dict[str, float]) -> dict[str, tuple[float, str]]:
    """``component -> (seconds, "measured" | "configured")`` for the pipeline's components."""
    return {c: (measured[c], "measured") if c in measured else (config.components[c].timeouts.cold_start_s,
                                                                  "configured")
            for c in pipeline.components if c in config.components}


@plan_app.command("warmup")
def plan_warmup(
    pipeline: str = typer.Argument(..., help="A pipeline from pipelines.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Standing cost vs worst first-request delay for each way of keeping the pipeline warm."""
    from compoundry.core.autoscaling.warmup_plans import recommended, warmup_options
    from compoundry.store.capacity import CapacityStore

    config, store = config_and_store()
    if pipeline not in config.pipelines:
        fail(f"unknown pipeline {pipeline!r}; known: {', '.join(sorted(config.pipelines))}", code=2)
    p = config.pipelines[pipeline]
    colds = cold_starts(config, p, CapacityStore(store).cold_start_estimates())
    options = warmup_options(p, config.components, {c: s for c, (s, _) in colds.items()})
    best = recommended(options, p.sla_ms / 1000)
    if as_json:
        print(json.dumps({"pipeline": pipeline, "sla_s": p.sla_ms / 1000,
                          "cold_starts": {c: {"seconds": s, "source": src} for c, (s, src) in colds.items()},
                          "options": [{**o.__dict__, "standing_cost_per_month": round(o.standing_cost_per_month, 2),
                                       "recommended": o is best} for o in options]}, indent=2))
        return
    console.print(_cold_table(colds))
    console.print(_options_table(pipeline, options, best, p.sla_ms / 1000))
    missing = [c for c in best.kept_warm if config.components[c].scaling.min_replicas < 1]
    if missing:
        console.print("To apply it, set [bold]scaling.min_replicas: 1[/] in components.yaml for: "
                      + ", ".join(missing) + " (or hold it for a window with a scheduled-warmup entry).")


def scaling_windows(config, configured_down_s: float, measured: dict[str, float]) -> list[dict]:
    """Per component: its bounds, its cold start (measured, else configured) and the effective down window."""
    rows = []
    for name, c in sorted(config.components.items()):
        cold = cold_start_s(measured.get(name), c.timeouts.cold_start_s)
        window = down_window_s(configured_down_s, cold)
        rows.append({"component": name, "min_replicas": c.scaling.min_replicas,
                     "max_replicas": c.scaling.max_replicas, "target_concurrency": c.scaling.target_concurrency,
                     "idle_window_s": c.scaling.idle_window_s, "cold_start_s": cold,
                     "cold_start_source": "measured" if name in measured else "configured",
                     "down_stabilization_s": window,
                     "down_stabilization_from": "configured" if window == configured_down_s else "cold start"})
    return rows


@plan_app.command("scaling")
def plan_scaling(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Each component's bounds and the scale-down window in force (the configured one, or k cold starts)."""
    from compoundry.store.capacity import CapacityStore

    config, store = config_and_store()
    configured = load_settings().config.autoscaler.down_stabilization_s
    rows = scaling_windows(config, configured, CapacityStore(store).cold_start_estimates())
    if as_json:
        print(json.dumps({"down_stabilization_s": configured, "cold_starts": COLD_STARTS_PER_DOWN_WINDOW,
                          "components": rows}, indent=2))
        return
    table = Table(title="Scale-down window per component",
                  caption=f"window = max(autoscaler.down_stabilization_s {configured:g} s, "
                          f"{COLD_STARTS_PER_DOWN_WINDOW:g} x cold start); a configured cold start is "
                          "timeouts.cold_start_s (an upper bound)")
    for column, justify in (("component", "left"), ("replicas", "right"), ("cold start s", "right"),
                            ("source", "left"), ("window s", "right")):
        table.add_column(column, justify=justify)
    for r in rows:
        table.add_row(r["component"], f"{r['min_replicas']}..{r['max_replicas']}", f"{r['cold_start_s']:.1f}",
                      r["cold_start_source"], f"{r['down_stabilization_s']:.1f}")
    console.print(table)


def _cold_table(colds: dict[str, tuple[float, str]]) -> Table:
    table = Table(title="Cold start per component")
    table.add_column("component")
    table.add_column("seconds to ready", justify="right")
    table.add_column("source")
    for c, (s, src) in sorted(colds.items(), key=lambda kv: -kv[1][0]):
        table.add_row(c, f"{s:.1f}", src if src == "measured" else "configured cold_start_s (upper bound)")
    return table


def _options_table(pipeline: str, options, best, sla_s: float) -> Table:
    table = Table(title=f"Warm-up options for {pipeline} (SLA {sla_s:.1f} s)")
    for column, justify in (("option", "left"), ("kept warm", "left"), ("standing $/hour", "right"),
                            ("$/month", "right"), ("worst first request, s", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for o in options:
        table.add_row(o.name, ", ".join(o.kept_warm) or "-", f"{o.standing_cost_per_hour:.2f}",
                      f"{o.standing_cost_per_month:,.0f}", f"{o.worst_first_request_s:.1f}",
                      "[green]cheapest within SLA[/]" if o is best else "")
    return table


@warmup_app.command("hold")
def warmup_hold(
    component: list[str] = typer.Argument(..., help="Components to keep warm."),
    replicas: int = typer.Option(1, "--replicas", "-r", min=0, help="Min replicas to hold."),
    minutes: float = typer.Option(60, "--minutes", "-m", min=0.1, help="How long to hold them."),
) -> None:
    """Hold min replicas on components for a while (the gateway's autoscaler applies it within a second)."""
    from compoundry.store.capacity import CapacityStore

    config, store = config_and_store()
    unknown = [c for c in component if c not in config.components]
    if unknown:
        fail(f"unknown component(s) {unknown}", code=2)
    for c in component:
        floor = CapacityStore(store).add_floor(c, replicas, timedelta(minutes=minutes), source="compoundry warmup hold")
        console.print(f"{c}: min {replicas} replica(s) until {floor.ends_at:%Y-%m-%d %H:%M:%S} UTC (floor {floor.id})")


@warmup_app.command("list")
def warmup_list() -> None:
    """Floors in force now."""
    from compoundry.store.capacity import CapacityStore

    _, store = config_and_store()
    table = Table(title="Warm-up floors in force")
    for column in ("id", "component", "min replicas", "until (UTC)", "source"):
        table.add_column(column)
    for f in CapacityStore(store).floors():
        table.add_row(f.id, f.component, str(f.min_replicas), f"{f.ends_at:%Y-%m-%d %H:%M:%S}", f.source)
    console.print(table)


@warmup_app.command("release")
def warmup_release(floor_id: str = typer.Argument(..., help="The floor id `warmup list` shows.")) -> None:
    """End a floor now; replicas then scale down on the usual idle rules."""
    from compoundry.store.capacity import CapacityStore

    _, store = config_and_store()
    if not CapacityStore(store).release(floor_id):
        fail(f"no floor {floor_id!r} in force")
    console.print(f"floor {floor_id} released")


targets_app = typer.Typer(help="Render what a remote target would run (Kubernetes, BentoCloud).", no_args_is_help=True)


@targets_app.command("render")
def targets_render(
    component: str = typer.Argument(..., help="A component from components.yaml."),
    target: str = typer.Option("kubernetes", "--target", "-t", help="kubernetes | bentocloud"),
    version: str = typer.Option("", help="Model version (default: the one routed now, else 1)."),
    image: str = typer.Option("", help="Container image / Bento tag (default: the routed deployment's Bento)."),
) -> None:
    """Print the manifests (kubernetes) or `bentoml deploy` config (bentocloud) for a component, as YAML."""
    import yaml

    from compoundry.scaling.targets.protocol import ScalingSpec

    config, store = config_and_store()
    if component not in config.components:
        fail(f"unknown component {component!r}; known: {', '.join(sorted(config.components))}", code=2)
    routed = store.routed_deployment(component)
    spec = ScalingSpec.for_component(routed.id if routed else f"{component}-v{version or 1}", component,
                                     config.components[component], version or (routed.model_version if routed else "1"),
                                     image or (routed.bento_tag if routed and routed.bento_tag else f"{component}:latest"))
    options = load_settings().config
    if target == "kubernetes":
        from compoundry.scaling.targets.kubernetes import render_manifests

        docs = render_manifests(spec, namespace=options.kubernetes.namespace)
    elif target == "bentocloud":
        from compoundry.scaling.targets.bentocloud import render_config

        docs = [render_config(spec, cluster=options.bentocloud.cluster)]
    else:
        fail(f"unknown target {target!r}: kubernetes or bentocloud", code=2)
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
