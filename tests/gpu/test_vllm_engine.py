"""VLLMEngine on a CUDA machine with vllm installed (the llm Bento's GPU image); skipped elsewhere."""

import asyncio
import importlib.util

import pytest

pytestmark = pytest.mark.gpu


def _gpu_and_vllm() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(not _gpu_and_vllm(), reason="needs CUDA and the vllm package")
def test_vllm_engine_serves_the_tiny_llm_directory(tmp_path):
    from bentos.llm.engines import VLLMEngine, choose_engine
    from compoundry.registry.demo_models import build_tiny_llm

    assert choose_engine(True, True, None) == "vllm"
    hf_dir = build_tiny_llm(tmp_path / "hf_model", train_steps=20)
    engine = VLLMEngine(hf_dir, {"max_model_len": 256, "gpu_memory_utilization": 0.3, "enforce_eager": True})
    prompt = engine.render([{"role": "user", "content": "Where is my order?"}])

    async def run():
        done = await engine.complete(prompt, 8, 0.0)
        pieces = [p async for p in engine.stream(prompt, 8, 0.0)]
        return done, pieces

    done, pieces = asyncio.run(run())
    assert 0 < done.completion_tokens <= 8 and done.prompt_tokens > 0
    assert "".join(pieces) == done.text  # greedy: streaming and non-streaming agree
