"""``compoundry k8s render``: the platform and every component as Kubernetes manifests (a kustomize tree)."""

from __future__ import annotations

from pathlib import Path

import typer

from compoundry.cli.common import console, fail, load_platform_config, load_settings

k8s_app = typer.Typer(help="Run the platform on Kubernetes: render its manifests.", no_args_is_help=True)


@k8s_app.command("render")
def render(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write base/ and overlays/gpu/ into."),
    registry: str = typer.Option("", help="Image registry (overrides platform.yaml kubernetes.images.registry)."),
    tag: str = typer.Option("", help="Pinned image tag (overrides kubernetes.images.tag; never 'latest')."),
) -> None:
    """Write the platform (MLflow, Prefect, gateway, RBAC, configs/) and every component's runner.

    Apply with `kubectl apply --server-side -k DIR/base`, or `-k DIR/overlays/gpu` for llm runners on GPUs.
    Images: kubernetes.images.registry + tag, else `bentoml build` + `bentoml containerize` (docker, podman
    or buildctl installed); with neither the command fails and says so.
    """
    from pydantic import ValidationError

    from compoundry.config.kubernetes_config import ImageSettings
    from compoundry.scaling.targets.kubernetes_images import ImageUnavailable
    from compoundry.scaling.targets.kubernetes_tree import write_tree

    config = load_platform_config(load_settings())
    if registry or tag:
        images = config.platform.kubernetes.images
        try:
            images = ImageSettings(**{**images.model_dump(), **({"registry": registry} if registry else {}),
                                      **({"tag": tag} if tag else {})})
        except ValidationError as err:
            fail(f"--registry/--tag: {err.errors()[0]['msg']}", code=2)
        kubernetes = config.platform.kubernetes.model_copy(update={"images": images})
        config = config.model_copy(update={"platform": config.platform.model_copy(update={"kubernetes": kubernetes})})
    try:
        files = write_tree(out, config)
    except ImageUnavailable as err:
        fail(str(err))
    console.print(f"wrote {len(files)} files to {out}: `kubectl apply --server-side -k {out / 'base'}` "
                  f"(or {out / 'overlays' / 'gpu'} for GPU llm runners)")
