"""The HTTP contract of `ragtune serve` as OpenAPI: request and response shapes and every status an endpoint can
answer. The endpoints read bodies by hand (`inputs`), so that a bad body gets a one-line reason; these models
document the contract (the /docs page, API clients) and are what the property-based tests fuzz against."""

from __future__ import annotations

from typing import Any

from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000, description="The question, plain text.")
    k: int | None = Field(default=None, ge=1, le=20, description="Passages in the prompt (default: the champion's).")
    filters: dict[str, str | int | bool] | None = Field(default=None, description="Payload filters, field: value.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The id /v1/ask returned to this client.")
    rating: str = Field(pattern=r"^(up|down)$", description="up or down.")
    correction: str | None = Field(default=None, max_length=4000, description="The right answer (for review).")
    comment: str | None = Field(default=None, max_length=4000, description="Anything else.")


class Decision(BaseModel):
    check: str
    action: str
    detail: str


class Source(BaseModel):
    n: int
    doc_id: str | None = None
    source_uri: str | None = Field(default=None, description="Path under the source root, or the web address.")
    title: str | None = None
    section: str | None = None
    score: float | None = None
    text: str | None = None


class AskResponse(BaseModel):
    answer: str
    sources: list[Source] = Field(description="The passages the answer cites; empty for a refusal.")
    model: str
    index_version: str | None
    request_id: str
    cached: bool
    latency_ms: float
    not_found: bool
    blocked: bool
    support: float | None
    guardrails: list[Decision]


class FeedbackResponse(BaseModel):
    feedback_id: str
    request_id: str
    status: str
    replaces: str | None = Field(default=None, description="This client's earlier vote on the request, replaced.")


class Whoami(BaseModel):
    client: str
    role: str
    anonymous: bool
    counted: bool


class ErrorResponse(BaseModel):
    error: str = Field(description="One line: what was wrong.")
    check: str | None = Field(default=None, description="The rule that refused the request.")
    request_id: str | None = None


ERRORS = {400: "Bad input (the reason is in `error`)", 401: "No valid API key", 403: "Role, origin or host not "
          "allowed", 404: "Unknown request id", 408: "The body did not arrive in time", 409: "The request was refused: "
          "nothing to rate", 413: "Body or question too large", 415: "Not application/json", 429: "Rate limit: see "
          "Retry-After", 500: "Internal error (logged with a traceback)", 503: "Not ready, or too many questions in "
          "progress: see Retry-After"}


def responses(ok: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented answers: `ok` for 200 (documented, not enforced: the endpoint's dict goes out as it is), and
    the error shape for every other status."""
    return {200: {"model": ok, "description": "OK"},
            **{code: {"model": ErrorResponse, "description": ERRORS[code]} for code in codes}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body the endpoint reads by hand."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


ASK = {"openapi_extra": json_body(AskRequest), "response_model": None,
       "responses": responses(AskResponse, 400, 401, 403, 408, 413, 415, 429, 500, 503)}
FEEDBACK = {"openapi_extra": json_body(FeedbackRequest), "response_model": None,
            "responses": responses(FeedbackResponse, 400, 401, 403, 404, 408, 409, 413, 415, 429, 500)}
WHOAMI = {"response_model": None, "responses": responses(Whoami, 401, 403, 500)}
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
METRICS = {"response_class": PlainTextResponse, "responses": {  # text on success, the JSON error shape otherwise
    200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
    **{code: {"description": ERRORS[code], "content": _ERROR_JSON} for code in (401, 403, 500)}}}
