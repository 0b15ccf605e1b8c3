"""The JSON API under /api/ and the web page at /, on FastAPI. Every request over a bound, malformed or asking what
the model cannot do gets a 4xx with one line `{"error": "..."}`; the models decode in their own threads, in
batches (`batcher.py`), so the event loop always answers."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from captioning.images import load_image
from core.errors import UserError
from core.search_config import SearchConfig
from recipes.server.batcher import Batcher, QueueFull
from recipes.server.limits import Limits
from recipes.server.tasks import GenerateRequest, SearchOptions, Served, TranslateRequest

STATIC = Path(__file__).parent / "static"
FLAGS = {"textgen": "--textgen", "translation": "--translate", "captioning": "--caption"}


class Refused(Exception):
    """A request the server will not take: its status and one line saying why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


class Models:
    """The models served, each with its batcher: what every endpoint reaches (as `app.state.models`)."""

    def __init__(self, served: dict[str, Served], limits: Limits):
        self.served, self.limits, wait = served, limits, limits.max_wait_ms / 1000
        self.batchers = {t: Batcher(t, s.run, limits.max_batch, wait, limits.max_queue) for t, s in served.items()}

    def __getitem__(self, task: str) -> Served:
        if task not in self.served:
            raise Refused(404, f"no {task} model is loaded (start the server with {FLAGS[task]} CHECKPOINT)")
        return self.served[task]

    async def answer(self, task: str, kind: Any, request: Any, size: int) -> Any:
        """The answer to a request checked by its model, decoded in a batch."""
        try:
            return await self.batchers[task].submit(kind, request, size)
        except QueueFull as err:
            raise Refused(503, f"{err}; retry in a moment", {"Retry-After": "1"}) from None


def create_app(served: dict[str, Served], limits: Limits) -> FastAPI:
    """The app serving `served` (by task: textgen, translation, captioning) within `limits`."""
    models = Models(served, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in models.batchers.values():
            batcher.start()
        yield
        for batcher in models.batchers.values():  # requests in flight get their answers first
            await batcher.stop()

    app = FastAPI(title="seqgen", description="Text generation, translation and captioning.", lifespan=lifespan)
    app.state.models = models
    app.include_router(api)
    _errors(app)
    app.add_middleware(BodyLimit, limits=limits)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _models(request: Request) -> Models:
    return request.app.state.models


api = APIRouter()
Loaded = Annotated[Models, Depends(_models)]


@api.get("/api/health")
async def health(models: Loaded) -> dict[str, Any]:
    return {"status": "ok", "models": sorted(models.served)}


@api.get("/api/models")
async def loaded(models: Loaded) -> dict[str, Any]:
    return {task: s.info() for task, s in models.served.items()}


@api.post("/api/generate")
async def generate(body: GenerateRequest, models: Loaded) -> dict[str, Any]:
    return {"outputs": await models.answer("textgen", *models["textgen"].request(body))}


@api.post("/api/generate/stream")
async def generate_stream(body: GenerateRequest, models: Loaded) -> StreamingResponse:
    """The text as it is chosen, as server-sent events: `piece` events, then one `end` (or `error`)."""
    if body.num_samples != 1:
        raise UserError("the stream sends one continuation as it is chosen: num_samples 1")
    models["textgen"].request(body)  # every check a generate request gets
    config = models["textgen"].config(body)
    if config.method == "beam":
        raise UserError("the stream sends one continuation as it is chosen: method greedy or sample")
    events = stream_events(models["textgen"].model, body.prompt, config)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@api.post("/api/translate")
async def translate(body: TranslateRequest, models: Loaded) -> dict[str, Any]:
    return await models.answer("translation", *models["translation"].request(body))


@api.post("/api/caption")
async def caption(
    request: Request, image: Annotated[UploadFile, File()], models: Loaded, attention: Annotated[bool, Form()] = False
) -> Any:
    """A picture (multipart field `image`) and search options as form fields."""
    captioner, form = models["captioning"], await request.form()
    try:
        fields = {k: v for k, v in form.items() if k not in ("image", "attention")}
        options = SearchOptions.model_validate(fields, strict=False)  # a form's values are all text
    except ValidationError as err:  # as a JSON body's would be
        raise RequestValidationError(err.errors()) from None
    config = captioner.config(options)
    picture = open_picture(await image.read(models.limits.max_picture_bytes + 1), models.limits)
    return await models.answer("captioning", captioner.kind(config), (picture, attention), 1)


@api.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def open_picture(data: bytes, limits: Limits) -> Image.Image:
    """An uploaded picture, its size checked from its header before it is decoded (a decompression bomb is
    refused without being opened); anything Pillow cannot read is one line."""
    if len(data) > limits.max_picture_bytes:
        raise Refused(413, f"image is over this server's bound of {limits.max_picture_bytes} bytes")
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.width * picture.height > limits.max_pixels:
            raise Refused(413, f"image has {picture.width} x {picture.height} pixels, over this server's bound of "
                          f"{limits.max_pixels}")  # fmt: skip
        picture.load()  # decoded here: a truncated file fails now, not inside a batch
        return load_image(ImageOps.exif_transpose(picture))
    except UnidentifiedImageError:
        raise UserError("image is not a picture this server can read") from None
    except Image.DecompressionBombError as err:  # Pillow's own guard, met before its size could be read
        raise Refused(413, f"image is over this server's bound of {limits.max_pixels} pixels ({err})") from None
    except OSError as err:  # truncated or damaged data
        raise UserError(f"image cannot be decoded ({err})") from None


async def stream_events(model: Any, prompt: str, config: SearchConfig) -> AsyncIterator[str]:
    """Server-sent events of a continuation, chosen in a thread of its own; when the client goes (the generator
    is closed), the thread stops at its next token."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue[tuple[str, str]]()
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in model.stream(prompt, config):
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))
            loop.call_soon_threadsafe(events.put_nowait, ("end", ""))
        except Exception as err:  # (its arguments were checked before the stream began)
            loop.call_soon_threadsafe(events.put_nowait, ("error", str(err)))

    thread = threading.Thread(target=produce, name="stream", daemon=True)
    thread.start()
    text = ""
    try:
        while True:
            kind, value = await events.get()
            text += value
            payload = {"text": value} if kind == "piece" else {"text": text} if kind == "end" else {"error": value}
            yield f"event: {kind}\ndata: {json.dumps(payload)}\n\n"
            if kind != "piece":
                return
    finally:
        stop.set()


class BodyLimit:
    """ASGI middleware: a request body over its bound (a JSON request's, or a picture upload's) is refused with
    413, from its Content-Length or, when it comes in chunks, as it arrives; a body within it is read whole first
    (bounded) and handed on."""

    def __init__(self, app: Any, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"] == "/api/caption"
        bound = self.limits.max_picture_bytes + (1 << 16) if upload else self.limits.max_body_bytes
        declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)  # (uvicorn checked its form)
        too_large = f"over this server's bound of {bound} bytes"
        if declared > bound:
            return await _refuse(send, 413, f"the request body has {declared} bytes, {too_large}")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body, more = body + message.get("body", b""), message.get("more_body", False)
            if len(body) > bound:
                return await _refuse(send, 413, f"the request body is {too_large}")
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _errors(app: FastAPI) -> None:
    """Every refusal as `{"error": one line}`: validation (400 for JSON that does not parse, 422 else), the
    library's checks of values (422), bounds (413), a full queue (503)."""

    def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            return refusal(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})")
        field = ".".join(str(part) for part in first["loc"] if part != "body") or "the body"
        if first["type"] == "extra_forbidden":
            return refusal(422, f"{field}: unknown field")
        return refusal(422, f"{field}: {first['msg'][0].lower()}{first['msg'][1:]}")

    @app.exception_handler(HTTPException)  # the framework's own: unknown paths, wrong methods, unreadable bodies
    async def framework(request: Request, err: HTTPException) -> JSONResponse:
        unreadable = err.status_code == 400  # FastAPI's "There was an error parsing the body"
        detail = "the body cannot be read as JSON or form data" if unreadable else str(err.detail)
        return refusal(err.status_code, f"{detail[:1].lower()}{detail[1:]} ({request.method} {request.url.path})",
                       err.headers)  # fmt: skip

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused) -> JSONResponse:
        return refusal(err.status, str(err), err.headers)

    @app.exception_handler(Exception)  # a fault of the server's own: one line to the client, the trace to the log
    async def fault(request: Request, err: Exception) -> JSONResponse:
        return refusal(500, f"the server failed on this request ({type(err).__name__}); its log says more")

    for kind in (UserError, ValueError, TypeError):  # the library's checks of what a request asked for

        @app.exception_handler(kind)
        async def unusable(request: Request, err: Exception) -> JSONResponse:
            return refusal(422, str(err).splitlines()[0] if str(err) else type(err).__name__)
