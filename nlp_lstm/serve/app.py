"""The HTTP API over trained predictors (FastAPI): what each endpoint takes and answers,
and how bad requests are refused.

- ``GET /health``: 200 once every model is loaded, 503 before.
- ``GET /v1/models``: each model's name, task, labels and training config.
- ``POST /v1/models/{name}/predict`` ``{"inputs": [...], "options": {...}}`` ->
  ``{"model": name, "outputs": [...]}``, one output per input, in order.
- ``GET /v1/models/{name}/example``: an input to try the model with.
- ``POST /v1/models/{name}/inside`` ``{"input": ..., "module", "layer", "direction",
  "cell"}`` -> every gate, cell and hidden value of that unit at each position of the
  input (:func:`nlp_lstm.inside.cell_view`), and what the model's modules hold.
- ``POST /v1/models/{name}/stream`` ``{"prompt": "...", "options": {...}}`` (charlm): the
  continuation as server-sent events, a character at a time.
- ``GET /``: the demo page; ``/docs``: the OpenAPI page.

A bad request gets a JSON ``{"error": "..."}`` with a 4xx status; a failure inside a model
call is a 500 for that request only.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nlp_lstm.contract import Predictor
from nlp_lstm.errors import UserError
from nlp_lstm.serve.batcher import Batcher
from nlp_lstm.serve.settings import ServeConfig
from nlp_lstm.tasks.common import plain_result

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    inputs: list[Any] = Field(description="one input per output: see GET /v1/models")
    options: dict[str, Any] = Field(default_factory=dict)


class StreamRequest(BaseModel):
    prompt: str
    options: dict[str, Any] = Field(default_factory=dict)


class InsideRequest(BaseModel):
    input: Any = Field(description="one input, as one of predict's inputs")
    module: str | None = Field(None, description="default: the first recurrent module")
    layer: int | None = Field(None, description="default: the last layer")
    direction: str = "forward"
    cell: int = 0


class BadRequest(Exception):
    """A request the server refuses: its status and one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------- per task

# option -> (type, low, high): what a request may set, checked before any model work
OPTIONS: dict[str, dict[str, tuple[type, float, float]]] = {
    "ner": {},
    "sentiment": {},
    "translate": {"beam_size": (int, 1, 20), "attention": (bool, 0, 1)},
    "charlm": {
        "length": (int, 0, 5_000),
        "temperature": (float, 0.0, 10.0),
        "top_k": (int, 0, 100_000),
        "top_p": (float, 1e-9, 1.0),
        "seed": (int, 0, 2**63 - 1),
    },
    "forecast": {},
}


def text_size(task: str, item: Any) -> int:
    """The characters an input holds (what ``serve.max_chars`` limits)."""
    if isinstance(item, str):
        return len(item)
    if task == "ner" and isinstance(item, list):
        return sum(len(t) if isinstance(t, str) else 0 for t in item) + len(item)
    if task == "forecast" and isinstance(item, dict):
        return sum(len(v) if isinstance(v, list) else 1 for v in item.values())
    return 0


def check_inputs(task: str, predictor: Predictor, inputs: list[Any], serve: ServeConfig) -> None:
    """Refuse inputs the model cannot take, before they wait for it."""
    if not inputs:
        raise BadRequest(422, "inputs is empty: give at least one input")
    if len(inputs) > serve.max_inputs:
        raise BadRequest(422, f"{len(inputs)} inputs; at most serve.max_inputs={serve.max_inputs} a request")  # fmt: skip
    for position, item in enumerate(inputs):
        if task == "forecast" and not isinstance(item, dict):  # never a server-side path
            raise BadRequest(422, f"input {position}: expected an object of columns ({{\"OT\": [..], ...}}), got {type(item).__name__}")  # fmt: skip
        size = text_size(task, item)
        if size > serve.max_chars:
            raise BadRequest(422, f"input {position}: {size} characters; at most serve.max_chars={serve.max_chars}")  # fmt: skip
        try:
            predictor.check_input(item, position)
        except (TypeError, ValueError) as err:
            raise BadRequest(422, str(err)) from None


def check_options(task: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options, checked against what the task takes (types and ranges)."""
    allowed = OPTIONS[task]
    checked = {}
    for name, value in options.items():
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise BadRequest(422, f"unknown option {name!r} for a {task} model (options: {known})")  # fmt: skip
        kind, low, high = allowed[name]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)  # fmt: skip
        if not ok:
            raise BadRequest(422, f"option {name} must be {'true or false' if kind is bool else kind.__name__}, got {value!r}")  # fmt: skip
        if kind is not bool and not low <= value <= high:
            raise BadRequest(422, f"option {name} must be in [{low:g}, {high:g}], got {value!r}")
        checked[name] = value
    return checked


def shape_output(task: str, result: Any, options: dict[str, Any]) -> Any:
    """A predictor's result as the API's JSON output."""
    plain = plain_result(result)
    if task == "translate" and not options.get("attention"):
        return {"text": plain["text"], "score": plain["score"]}
    return plain


EXAMPLE_TEXT = {
    "ner": "Peter Blackburn visited Berlin on Monday. The European Commission said it disagreed.",
    "sentiment": "A gorgeous, witty and moving film, though a little too long.",
    "charlm": "ROMEO:\n",
    "de": "Zwei junge Männer spielen Fußball auf einem Feld.",
    "en": "Two young men are playing football in a field.",
}


def example_input(predictor: Predictor) -> Any:
    """An input to try the model with: a sentence, a prompt, or the last rows of the series
    the forecaster was trained on (when that file is still there), as a table of columns."""
    task = predictor.task
    if task == "translate":
        return EXAMPLE_TEXT.get(predictor.data.src_lang, EXAMPLE_TEXT["de"])
    if task != "forecast":
        return EXAMPLE_TEXT[task]
    from nlp_lstm.data.series import read_series

    data = predictor.data
    if not data.path or not Path(data.path).expanduser().is_file():
        return None
    series = read_series(Path(data.path).expanduser(), data.time_column)
    rows = slice(len(series) - 2 * data.look_back, len(series))
    table = {name: series.values[rows, i].tolist() for i, name in enumerate(series.columns)}
    if series.times is not None and data.time_column:
        table = {data.time_column: [str(t) for t in series.times[rows]], **table}
    return table


def labels_of(predictor: Predictor) -> list[str]:
    """What the model can answer: entity types, classes, target columns, characters."""
    task = predictor.task
    if task == "ner":
        return predictor.labels
    if task == "sentiment":
        return list(predictor.labels.itos)
    if task == "forecast":
        return list(predictor.targets)
    if task == "translate":
        data = predictor.data
        return [data.src_lang, data.tgt_lang]
    return []


def describe(name: str, predictor: Predictor) -> dict[str, Any]:
    config = predictor.config
    return {
        "name": name,
        "task": predictor.task,
        "labels": labels_of(predictor),
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "options": {k: v[0].__name__ for k, v in OPTIONS[predictor.task].items()},
        "config": {k: config[k] for k in ("model", "data", "embeddings") if k in config},
    }


# ---------------------------------------------------------------------------- the app


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with a 413, whether or not the client
    said how long its body is (ASGI middleware)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(self.limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    scope[TOO_LARGE] = True  # FastAPI turns the error into a 400: see http_error
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


TOO_LARGE = "nlp_lstm.body_too_large"


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body over serve.max_body_bytes={limit} bytes"}, 413)


async def until_disconnected(request: Request) -> None:
    """Return when the client closes the connection (its body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(load_models: Callable[[], dict[str, Predictor]], serve: ServeConfig) -> FastAPI:
    """The app. ``load_models`` runs in a thread at start-up; until it returns, /health
    says 503 and predict calls wait for nothing: they get a 503."""
    state: dict[str, Any] = {"models": {}, "batchers": {}, "ready": False, "error": None}

    def load() -> None:
        try:
            models = load_models()
            size, wait = (serve.max_batch_size, serve.max_wait_ms) if serve.batching else (1, 0.0)  # fmt: skip
            state["batchers"] = {n: Batcher(n, p, size, wait) for n, p in models.items()}
            gc.collect()
            gc.freeze()  # the models' objects stay: full collections need not walk them again
            state["models"] = models
            state["ready"] = True
            log.info("serving %s", ", ".join(f"{n} ({p.task})" for n, p in models.items()))
        except Exception as err:  # reported by /health; the process keeps its exit to the CLI
            log.exception("loading the models failed")
            state["error"] = f"{type(err).__name__}: {err}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=load, name="load-models", daemon=True)
        loader.start()
        yield
        for batcher in state["batchers"].values():
            await asyncio.to_thread(batcher.close)

    app = FastAPI(
        title="nlp_lstm",
        summary="LSTM models for NER, sentiment, character LMs, translation and forecasting",
        lifespan=lifespan,
    )
    app.state.serving = state

    def model(name: str) -> tuple[Predictor, Batcher]:
        if not state["ready"]:
            raise BadRequest(503, state["error"] or "the models are still loading")
        if name not in state["models"]:
            known = ", ".join(state["models"])
            raise BadRequest(404, f"no model named {name!r} (models: {known})")
        return state["models"][name], state["batchers"][name]

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(err)}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"}, 400)  # fmt: skip
        return JSONResponse({"error": f"{where or 'body'}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if request.scope.get(TOO_LARGE):
            return too_large(serve.max_body_bytes)
        return JSONResponse({"error": str(err.detail)}, err.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.error("request %s failed: %s: %s", request.url.path, type(err).__name__, err)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, 500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state["ready"]:
            return JSONResponse({"status": "ready", "models": list(state["models"])})
        return JSONResponse({"status": "failed" if state["error"] else "loading", "error": state["error"]}, 503)  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict:
        if not state["ready"]:
            raise BadRequest(503, state["error"] or "the models are still loading")
        return {"models": [describe(n, p) for n, p in state["models"].items()]}

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, body: PredictRequest, request: Request) -> dict:
        predictor, batcher = model(name)
        task = predictor.task
        options = check_options(task, body.options)
        check_inputs(task, predictor, body.inputs, serve)
        work = asyncio.ensure_future(batcher.submit(body.inputs, options))
        gone = asyncio.ensure_future(until_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():  # the client left: drop its request before it costs model time
            work.cancel()
            return {}
        try:
            results = work.result()
        except (UserError, ValueError, TypeError) as err:
            raise BadRequest(422, str(err)) from None
        return {"model": name, "outputs": [shape_output(task, r, options) for r in results]}

    @app.post("/v1/models/{name}/stream")
    async def stream(name: str, body: StreamRequest) -> StreamingResponse:
        predictor, _ = model(name)
        if predictor.task != "charlm":
            raise BadRequest(422, f"model {name!r} is a {predictor.task} model; streams are for charlm models")  # fmt: skip
        options = check_options("charlm", body.options)
        check_inputs("charlm", predictor, [body.prompt], serve)

        def events():  # a plain iterator: Starlette runs it in a worker thread, step by step
            for char in predictor.stream(body.prompt, **options):
                yield f"data: {json.dumps({'text': char})}\n\n"
            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    @app.post("/v1/models/{name}/inside")
    async def inside(name: str, body: InsideRequest) -> dict:
        from nlp_lstm.inside import cell_view, inspect

        predictor, _ = model(name)
        check_inputs(predictor.task, predictor, [body.input], serve)

        def look() -> dict:
            arrays = inspect(predictor, [body.input])[0]
            return cell_view(arrays, body.module, body.layer, body.direction, body.cell)

        try:
            view = await asyncio.to_thread(look)
        except (UserError, ValueError, TypeError) as err:
            raise BadRequest(422, str(err)) from None
        return {"model": name, **view}

    @app.get("/v1/models/{name}/example")
    async def example(name: str) -> dict:
        predictor, _ = model(name)
        return {"model": name, "input": await asyncio.to_thread(example_input, predictor)}

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> HTMLResponse:
        page = resources.files("nlp_lstm.serve").joinpath("static/index.html").read_text()
        return HTMLResponse(page)

    return BodyLimit(app, serve.max_body_bytes)
