"""LLM engines behind the llm Bento: `transformers` on CPU, `vllm` on a CUDA machine.

Both load the same Hugging Face directory (artifact `hf_model` of the MLflow
model), render chat messages with the tokenizer's chat template, and expose the
same async interface: `complete(prompt, ...) -> Completion` and
`stream(prompt, ...) -> AsyncIterator[str]`.
"""

import asyncio
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

ENGINES = ("transformers", "vllm")
ENGINE_ENV = "COMPOUNDRY_LLM_ENGINE"


def choose_engine(cuda_available: bool, vllm_importable: bool, requested: str | None) -> str:
    """vLLM when a GPU and the vllm package are both there, else transformers; `requested` forces one."""
    if requested:
        requested = requested.strip().lower()
        if requested not in ENGINES:
            raise ValueError(f"unknown LLM engine {requested!r}; expected one of {', '.join(ENGINES)}")
        if requested == "vllm" and not (cuda_available and vllm_importable):
            raise ValueError("engine 'vllm' requested but CUDA or the vllm package is not available")
        return requested
    return "vllm" if cuda_available and vllm_importable else "transformers"


def detect_engine() -> str:
    import importlib.util

    import torch

    return choose_engine(torch.cuda.is_available(), importlib.util.find_spec("vllm") is not None,
                         os.environ.get(ENGINE_ENV) or None)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


class BaseEngine:
    name = "base"

    def __init__(self, hf_dir: str | Path, options: dict | None = None):
        from transformers import AutoTokenizer

        self.hf_dir = str(hf_dir)
        self.options = dict(options or {})
        self.tokenizer = AutoTokenizer.from_pretrained(self.hf_dir)
        self.max_model_len = int(self.options.get("max_model_len") or min(
            getattr(self.tokenizer, "model_max_length", 2048) or 2048, 4096))

    def render(self, messages: list[dict]) -> str:
        """Chat messages → prompt text via the tokenizer's chat template."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def complete(self, prompt: str, max_tokens: int, temperature: float) -> Completion:
        raise NotImplementedError

    def stream(self, prompt: str, max_tokens: int, temperature: float) -> AsyncIterator[str]:
        raise NotImplementedError


class TransformersEngine(BaseEngine):
    """CPU engine: AutoModelForCausalLM.generate, TextIteratorStreamer for streaming; one generation at a time."""

    name = "transformers"

    def __init__(self, hf_dir: str | Path, options: dict | None = None):
        super().__init__(hf_dir, options)
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(max(1, int(self.options.get("threads", os.cpu_count() or 1))))
        self.model = AutoModelForCausalLM.from_pretrained(self.hf_dir).eval()
        self._lock = threading.Lock()

    def _generate_kwargs(self, prompt: str, max_tokens: int, temperature: float) -> dict:
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        budget = max(1, self.max_model_len - ids["input_ids"].shape[1])
        kwargs = dict(ids, max_new_tokens=max(1, min(max_tokens, budget)),
                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=0)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def _complete_sync(self, prompt: str, max_tokens: int, temperature: float) -> Completion:
        import torch

        kwargs = self._generate_kwargs(prompt, max_tokens, temperature)
        n_prompt = kwargs["input_ids"].shape[1]
        with self._lock, torch.no_grad():
            out = self.model.generate(**kwargs)
        new = out[0, n_prompt:]
        finished = len(new) > 0 and int(new[-1]) == self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, n_prompt, int(len(new)), "stop" if finished else "length")

    async def complete(self, prompt: str, max_tokens: int, temperature: float) -> Completion:
        return await asyncio.to_thread(self._complete_sync, prompt, max_tokens, temperature)

    async def stream(self, prompt: str, max_tokens: int, temperature: float) -> AsyncIterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        kwargs = self._generate_kwargs(prompt, max_tokens, temperature)

        def run() -> None:
            with self._lock, torch.no_grad():
                self.model.generate(**kwargs, streamer=streamer)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        iterator = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, iterator, None)
            if piece is None:
                break
            if piece:
                yield piece
        await asyncio.to_thread(thread.join)


class VLLMEngine(BaseEngine):
    """GPU engine: vllm.AsyncLLMEngine over the same Hugging Face directory (continuous batching)."""

    name = "vllm"

    def __init__(self, hf_dir: str | Path, options: dict | None = None):
        super().__init__(hf_dir, options)
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        args = AsyncEngineArgs(
            model=self.hf_dir, tokenizer=self.hf_dir, max_model_len=self.max_model_len,
            gpu_memory_utilization=float(self.options.get("gpu_memory_utilization", 0.85)),
            enforce_eager=bool(self.options.get("enforce_eager", False)), disable_log_stats=True,
        )
        self.engine = AsyncLLMEngine.from_engine_args(args)

    def _params(self, max_tokens: int, temperature: float):
        from vllm import SamplingParams

        return SamplingParams(max_tokens=max(1, int(max_tokens)), temperature=max(0.0, float(temperature or 0.0)))

    async def _results(self, prompt: str, max_tokens: int, temperature: float):
        async for output in self.engine.generate(prompt, self._params(max_tokens, temperature), uuid.uuid4().hex):
            yield output

    async def complete(self, prompt: str, max_tokens: int, temperature: float) -> Completion:
        final = None
        async for final in self._results(prompt, max_tokens, temperature):
            pass
        out = final.outputs[0]
        return Completion(out.text, len(final.prompt_token_ids or []), len(out.token_ids),
                          out.finish_reason or "stop")

    async def stream(self, prompt: str, max_tokens: int, temperature: float) -> AsyncIterator[str]:
        sent = 0
        async for output in self._results(prompt, max_tokens, temperature):
            text = output.outputs[0].text
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)


def make_engine(name: str, hf_dir: str | Path, options: dict | None = None) -> BaseEngine:
    return {"transformers": TransformersEngine, "vllm": VLLMEngine}[name](hf_dir, options)
