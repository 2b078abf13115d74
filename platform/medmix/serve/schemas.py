"""Request and response bodies of the HTTP API (pydantic); FastAPI turns them into `/docs`.

    POST /v1/predict
    {"task": "cxr_classify",
     "inputs": {"condition": "edema", "view": "PA", "image": "<base64 PNG, JPEG or DICOM>"},
     "options": {"max_new_tokens": 8}}
    -> {"task": "cxr_classify", "text": "no", "model": {"id": "medmix/3", ...},
        "options": [{"option": "yes", "prob": 0.12, "logprob": -2.1}, ...], "prediction": "no", ...}

`inputs` is free-form here on purpose: which fields a task takes is the task registry's
business (`GET /v1/tasks`), and `medmix.serve.inputs` checks them with messages that name the
field. Everything else is strict: unknown keys, wrong types and out-of-range numbers are 422s.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationOptions(BaseModel):
    """How to generate; every field optional."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(None, ge=1, description="tokens to generate at most "
                                       "(default and ceiling: the server's serve.default_max_new_tokens / "
                                       "serve.max_new_tokens)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy; > 0 samples")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sampling seed (a seeded request draws "
                             "from its own generator, so its answer does not depend on its batch)")
    exemplar: bool | None = Field(None, description="render the task's one-shot exemplar (default: as the "
                                  "model was trained)")
    ignore_eos: bool = Field(False, description="keep generating past the end-of-text token (benchmarks)")
    score_options: bool = Field(True, description="for tasks with answer options, also return each "
                                "option's probability")


class PredictRequest(BaseModel):
    """One question to the model."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., min_length=1, max_length=64, description="task name, see GET /v1/tasks")
    inputs: dict[str, Any] = Field(..., description="the task's text fields (question, options, ...) and "
                                   "`image` (base64 PNG/JPEG/DICOM) or `images` (a list of them)")
    options: GenerationOptions = Field(default_factory=GenerationOptions)
    model: str | None = Field(None, max_length=256, description="served model to ask (id or alias); the "
                              "X-Medmix-Model header does the same; default: the first served model")


class OptionScore(BaseModel):
    option: str
    prob: float = Field(description="probability normalised over the options")
    logprob: float = Field(description="log-likelihood of the option (and end of text) given the prompt")


class Genotype(BaseModel):
    """Variant calling: the called genotype in VCF terms."""

    call: str = Field(description="homozygous reference | heterozygous | homozygous alternate")
    gt: str = Field(description="VCF GT: 0/0, 0/1 or 1/1")
    gq: float = Field(description="genotype quality, phred(1 - p(call)), capped at 99")
    probs: list[float] = Field(description="p(0/0), p(0/1), p(1/1)")


class ServedModel(BaseModel):
    """Which model answered."""

    id: str = Field(description="the served id: registry `name/version` or `export-<digest12>`")
    version: str | None = Field(None, description="registry version, when the model came from the registry")
    digest: str = Field(description="sha256 of the exported weights file")


class PredictResponse(BaseModel):
    task: str
    text: str = Field(description="the generated answer")
    model: ServedModel
    finish_reason: str = Field(description="stop (end of text) or length (max_new_tokens reached)")
    num_prompt_tokens: int
    num_generated_tokens: int
    options: list[OptionScore] | None = Field(None, description="per-option probabilities (option tasks)")
    prediction: str | None = Field(None, description="the most likely option (option tasks)")
    genotype: Genotype | None = Field(None, description="variant calling only")
    exemplar: bool = Field(description="whether the one-shot exemplar was in the prompt")
    truncated: bool = Field(description="whether context text was cut to fit the model's sequence length")
    batch_size: int = Field(description="requests in the model batch that answered this one")
    ignored_fields: list[str] = Field(default_factory=list, description="inputs the task's prompt does not use")
    latency_ms: float


class ErrorResponse(BaseModel):
    """Every error: what was wrong, and where."""

    error: str = Field(description="what was wrong and what to do")
    status: int
    field: str | None = Field(None, description="the request field at fault, e.g. inputs.image")
    details: list[dict[str, Any]] | None = None


class TaskField(BaseModel):
    name: str
    type: str
    required: bool
    description: str


class TaskInfo(BaseModel):
    name: str
    title: str
    kind: str
    modality: str
    images: str = Field(description="none, one, or several (a sequence)")
    fields: list[TaskField]
    options: list[str] | None = Field(None, description="fixed answer options (classification tasks)")
    example: dict[str, Any] = Field(description="a complete request body for POST /v1/predict")


class ModelInfo(BaseModel):
    id: str
    aliases: list[str]
    version: str | None
    digest: str
    default: bool
    source: str = Field(description="what --model named")
    params: dict[str, int] | None = Field(None, description="parameter counts: vision, projector, decoder, total")
    image_size: int | None = None
    num_image_tokens: int | None = None
    max_seq_len: int | None = None
    lineage: dict[str, Any] | None = Field(None, description="from the export's medmix.json: run, step, "
                                           "checkpoint, data digests")


class Health(BaseModel):
    status: str
    models: list[str]


# --- OpenAI-compatible shapes (medmix.serve.chat has the request) -----------------------------------

class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = Field(None, description="the request field at fault, e.g. messages[0].content[1]")
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error object (every error of /v1/chat/completions and /v1/models)."""

    error: OpenAIErrorDetail


class ModelCard(ModelInfo):
    """OpenAI's model object, with medmix's version, aliases and lineage alongside."""

    object: str = "model"
    created: int = Field(description="when the version's weights were written (Unix time)")
    owned_by: str = "medmix"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class ChatMessageOut(BaseModel):
    role: str
    content: str
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: dict[str, Any] | None = None
    finish_reason: str = Field(description="stop (end of text or a stop sequence) or length")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's chat.completion object (stream = true sends chat.completion.chunk events instead)."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str = Field(description="the served version that answered")
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    medmix: dict[str, Any] | None = Field(None, description="model version, digest, task, exemplar, batch size")
