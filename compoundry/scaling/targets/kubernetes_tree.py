"""``compoundry k8s render --out DIR``: the platform and every component's runner as one kustomize tree.

``DIR/base`` is a copy of deploy/kubernetes/base with configs/ as the ``compoundry-configs`` ConfigMap and
one file per component (``components/<name>.yaml``) added; ``DIR/overlays/gpu`` puts every llm runner on
the GPU node pool. Both build with ``kubectl kustomize``. Runners are rendered for the component's
serving alias (``models:/<model>@<alias>``), so the files do not change with each new version.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Callable

import yaml

from compoundry.config.base import REPO_ROOT
from compoundry.config.models import Config
from compoundry.scaling.targets.kubernetes_images import resolve_image
from compoundry.scaling.targets.kubernetes_render import gpu_count, render_manifests
from compoundry.scaling.targets.protocol import ScalingSpec

TEMPLATE_DIR = REPO_ROOT / "deploy" / "kubernetes"
#: the image of one engine: (engine, gpu) -> pinned image reference
ImageFor = Callable[[str, bool], str]


def component_spec(name: str, config: Config, image_for: ImageFor) -> ScalingSpec:
    """The runner of ``name`` as a spec: its serving alias, its engine's image (the GPU variant when it has GPUs)."""
    component = config.components[name]
    spec = ScalingSpec.for_component(name, name, component, component.alias, image="")
    gpus = gpu_count(spec, config.platform.kubernetes)
    return dataclasses.replace(spec, gpu=gpus, image=image_for(component.engine, gpus > 0),
                               model_uri=f"models:/{component.model}@{component.alias}")


def render_components(config: Config, image_for: ImageFor) -> dict[str, list[dict]]:
    settings = config.platform.kubernetes
    return {name: render_manifests(component_spec(name, config, image_for), settings.namespace, settings=settings)
            for name in sorted(config.components)}


def write_tree(out: Path, config: Config, image_for: ImageFor | None = None) -> list[Path]:
    """Write DIR/base and DIR/overlays/gpu (replacing what a previous render left there); returns the files."""
    settings = config.platform.kubernetes
    image_for = functools.cache(image_for or (lambda engine, gpu: resolve_image(engine, gpu, settings.images)))
    for sub in ("base", "overlays"):
        shutil.rmtree(out / sub, ignore_errors=True)
    shutil.copytree(TEMPLATE_DIR / "base", out / "base")
    shutil.copytree(TEMPLATE_DIR / "overlays", out / "overlays")

    base = out / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    kustomization["namespace"] = settings.namespace
    (base / "configs").mkdir()
    config_files = []
    for stem, path in sorted(config.sources.items()):
        shutil.copy2(path, base / "configs" / path.name)
        config_files.append(f"configs/{path.name}")
    kustomization["configMapGenerator"] = [{"name": "compoundry-configs", "files": config_files}]
    (base / "components").mkdir()
    for name, manifests in render_components(config, image_for).items():
        (base / "components" / f"{name}.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
        kustomization["resources"].append(f"components/{name}.yaml")
    _dump(base / "kustomization.yaml", kustomization)
    _write_gpu_overlay(out / "overlays" / "gpu", config, image_for)
    return sorted(p for p in out.rglob("*") if p.is_file())


def _write_gpu_overlay(overlay: Path, config: Config, image_for: ImageFor) -> None:
    """The pool's placement from platform.yaml, and the CPU llm image swapped for the GPU one."""
    pool = config.platform.kubernetes.gpu_node_pool
    ops = yaml.safe_load((overlay / "gpu-runner.yaml").read_text())
    for op in ops:
        if op["path"].endswith("/nodeSelector"):
            op["value"] = dict(pool.node_selector)
        elif op["path"].endswith("/tolerations"):
            op["value"] = [t.model_dump(exclude_none=True) for t in pool.tolerations]
    _dump(overlay / "gpu-runner.yaml", ops)
    if any(c.engine == "llm" for c in config.components.values()):
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        cpu_image, gpu_image = image_for("llm", False), image_for("llm", True)
        name, tag = gpu_image.rsplit(":", 1)
        kustomization["images"] = [{"name": cpu_image.rsplit(":", 1)[0], "newName": name, "newTag": tag}]
        _dump(overlay / "kustomization.yaml", kustomization)


def _dump(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
