"""The VoicePipeline spec as typed models (the CRD's schema checks shape; this checks meaning)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from voice_operator.profiles import NODE_SIZES, NodeProfile
from voice_operator.quantity import QuantityError, parse_cpu, parse_memory_mib
from voice_pipeline import contract as c


class SpecError(ValueError):
    """A spec the schema accepted but that means nothing workable; the message says why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StageSpec(_Model):
    engine: str = ""
    min_replicas: int = Field(1, alias="minReplicas", ge=0)
    max_replicas: int = Field(20, alias="maxReplicas", ge=1)
    cpu: str | None = None  # per-replica CPU limit override
    memory: str | None = None  # per-replica memory override (e.g. SenseVoiceSmall needs ~2Gi)
    batch_size: int | None = Field(None, alias="batchSize", ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> StageSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} > maxReplicas {self.max_replicas}")
        return self


class SecretRef(_Model):
    name: str
    key: str = "apiKey"


class ProviderSpec(_Model):
    name: str
    type: Literal["openai", "anthropic"] = "openai"
    base_url: str = Field("", alias="baseUrl")
    model: str = ""
    api_key_secret: SecretRef | None = Field(None, alias="apiKeySecret")
    weight: float = 1.0
    max_concurrency: int = Field(32, alias="maxConcurrency")


class LlmStageSpec(StageSpec):
    providers: list[ProviderSpec] = Field(default_factory=list)


# Series of one VoicePipeline's stage pods as the chart's ServiceMonitor labels them (Prometheus
# Operator: `namespace` and `service` = the stage Service's name). Placeholders: {namespace}, {name}.
DEFAULT_PROMETHEUS_SELECTOR = 'namespace="{namespace}",service=~"{name}-(gateway|vad|asr|llm|tts)"'


class Autoscaling(_Model):
    enabled: bool = True
    interval_seconds: int = Field(30, alias="intervalSeconds", ge=5)
    scale_down_stabilization_seconds: int = Field(300, alias="scaleDownStabilizationSeconds", ge=0)
    # Range of the rate()/quantile windows; a few scrape intervals at least.
    metrics_window_seconds: int = Field(60, alias="metricsWindowSeconds", ge=5)
    prometheus_url: str = Field("", alias="prometheusUrl")  # empty: the operator's --prometheus-url
    prometheus_selector: str = Field(DEFAULT_PROMETHEUS_SELECTOR, alias="prometheusSelector")


class Slo(_Model):
    end_to_end_p95_ms: int = Field(2000, alias="endToEndP95Ms", ge=100)


class NodeResources(_Model):
    cpu: str
    memory: str


class Stages(_Model):
    gateway: StageSpec = Field(default_factory=StageSpec)
    vad: StageSpec = Field(default_factory=StageSpec)
    asr: StageSpec = Field(default_factory=StageSpec)
    llm: LlmStageSpec = Field(default_factory=LlmStageSpec)
    tts: StageSpec = Field(default_factory=StageSpec)

    def get(self, stage: str) -> StageSpec:
        return getattr(self, stage)  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _known_engines(self) -> Stages:
        for stage in c.STAGES:
            engine = self.get(stage).engine
            if not engine:
                continue
            choices = c.ENGINES.get(stage, ())
            if not choices:
                follows = " (it follows from stages.llm.providers)" if stage == "llm" else ""
                raise ValueError(f"{stage}.engine: the {stage} stage has no engine choice{follows}")
            if engine not in choices:
                raise ValueError(f"{stage}.engine: unknown engine {engine!r} (one of {', '.join(choices)})")
        return self

    def engine(self, stage: str) -> str:
        """The engine the stage runs: the chosen one, the stage's default, or for the LLM what its
        providers imply (none, or one without a base URL, starts the local llama.cpp server)."""
        if stage == "llm":
            local = not self.llm.providers or any(
                p.type == "openai" and not p.base_url for p in self.llm.providers
            )
            return c.LLM_LOCAL_ENGINE if local else c.LLM_CLOUD_ENGINE
        choices = c.ENGINES.get(stage, ())
        return self.get(stage).engine or (choices[0] if choices else "")


class Redis(_Model):
    url: str = ""


class StageAuth(_Model):
    """The stage services' shared secret: a Secret the Pods mount (the chart creates it)."""

    secret_name: str = Field("", alias="secretName")
    key: str = "token"


class PipelineSpec(_Model):
    devices: int = Field(ge=1, le=10000)
    node_size: Literal["4c8g", "4c16g", "4c32g"] | None = Field(None, alias="nodeSize")
    node_resources: NodeResources | None = Field(None, alias="nodeResources")
    max_nodes: int = Field(1, alias="maxNodes", ge=1, le=100)
    slo: Slo = Field(default_factory=Slo)
    stages: Stages = Field(default_factory=Stages)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    redis: Redis = Field(default_factory=Redis)
    image: str = ""
    stage_auth: StageAuth = Field(default_factory=StageAuth, alias="stageAuth")

    def node(self) -> NodeProfile:
        if self.node_resources is not None:
            try:
                cpu = parse_cpu(self.node_resources.cpu)
                memory = parse_memory_mib(self.node_resources.memory)
            except QuantityError as exc:
                raise SpecError(f"nodeResources: {exc}") from exc
            return NodeProfile("custom", cpu, int(memory))
        return NODE_SIZES[self.node_size or "4c8g"]


def parse_spec(raw: dict[str, Any]) -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"invalid spec: {problems}") from exc
