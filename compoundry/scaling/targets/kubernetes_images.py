"""Which container image runs each engine on Kubernetes: always a pinned tag, never ``latest``.

Precedence: a registry and tag configured in platform.yaml (``kubernetes.images``) name the images
outright; otherwise, when a container builder is installed (docker, podman or buildctl), the engine's
Bento is built (``bentoml build``) and containerized (``bentoml containerize``), and the image is
tagged with the Bento's own version. With neither, there is no image to run: :class:`ImageUnavailable`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import yaml

from bentos.build import bentoml_executable, build_bento, engine_dir
from compoundry.config.kubernetes_config import ImageSettings

BUILDERS = ("docker", "podman", "buildctl")


class ImageUnavailable(RuntimeError):
    """No image can be named or built for an engine; the message says both ways to get one."""


def bento_name(engine: str) -> str:
    """The Bento (and image repository) name of an engine: ``name:`` in its bentofile (compoundry-llm...)."""
    return yaml.safe_load((engine_dir(engine) / "bentofile.yaml").read_text())["name"]


def image_repository(engine: str, gpu: bool) -> str:
    """An llm on GPU is a different image (CUDA base, vLLM inside): ``compoundry-llm-gpu``."""
    return bento_name(engine) + ("-gpu" if gpu and engine == "llm" else "")


def find_builder(settings: ImageSettings, which: Callable[[str], str | None] = shutil.which) -> str | None:
    candidates = BUILDERS if settings.builder == "auto" else (settings.builder,)
    return next((b for b in candidates if which(b)), None)


def resolve_image(engine: str, gpu: bool, settings: ImageSettings, *,
                  which: Callable[[str], str | None] = shutil.which,
                  build: Callable[[str, bool, str], str] | None = None) -> str:
    """The image of ``engine`` (GPU variant when ``gpu``): configured, else built, else :class:`ImageUnavailable`.
    ``build(engine, gpu, builder) -> image`` defaults to :func:`build_image` (tests pass a fake)."""
    repository = image_repository(engine, gpu)
    if settings.registry and settings.tag:
        return f"{settings.registry.rstrip('/')}/{repository}:{settings.tag}"
    builder = find_builder(settings, which)
    if builder is None:
        wanted = "any of " + ", ".join(BUILDERS) if settings.builder == "auto" else settings.builder
        raise ImageUnavailable(
            f"no image for engine {engine!r}: set kubernetes.images.registry and kubernetes.images.tag in "
            f"platform.yaml (images <registry>/{repository}:<tag>), or install a container builder ({wanted}) "
            f"so that `bentoml build` + `bentoml containerize` can make one")
    return (build or build_image)(engine, gpu, builder)


def build_image(engine: str, gpu: bool, builder: str, bentoml_home: Path | None = None,
                run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str:
    """``bentoml build`` then ``bentoml containerize``; the image is ``<repository>:<bento version>`` (pinned:
    a new build is a new tag). The cluster must be able to pull it: push it, or load it into a kind node."""
    tag = build_bento(engine, {"engine": engine, "accelerator": "gpu" if gpu else "cpu"},
                      bentoml_home=bentoml_home, gpu=gpu)
    image = f"{image_repository(engine, gpu)}:{tag.split(':', 1)[1]}"
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)} if bentoml_home else None
    argv = [bentoml_executable(), "containerize", tag, "--backend", builder, "--image-tag", image]
    try:
        run(argv, check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise ImageUnavailable(f"`bentoml containerize {tag} --backend {builder}` failed (exit {exc.returncode}): "
                               f"is the {builder} daemon running? Or set kubernetes.images.registry and "
                               "kubernetes.images.tag in platform.yaml") from None
    return image
