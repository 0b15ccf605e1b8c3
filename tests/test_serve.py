"""The server's JSON API through the framework's test client: every endpoint, every bad input and bound (one line,
never a traceback, and the server goes on serving), the event stream, and dynamic batching that changes no answer."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
import httpx2 as httpx
from fastapi.testclient import TestClient
from PIL import Image
from served_models import free_port, serve, wait_until_up

from captioning.captioner import Captioner
from core import LanguageModel
from recipes.serve import build_parser, load
from recipes.server.api import create_app, stream_events
from recipes.server.batcher import Batcher, QueueFull
from recipes.server.limits import Limits
from seq2seq.translator import Translator

LIMITS = dict(max_body_bytes=20_000, max_sentences=8, max_chars=200, max_len=300, max_beam=8, max_samples=4,
              max_picture_bytes=100_000, max_pixels=300 * 300, max_queue=64)  # fmt: skip


def make_app(checkpoints, **limits):
    limits = Limits(**(LIMITS | limits))
    argv = ["--textgen", str(checkpoints["textgen"]), "--translate", str(checkpoints["translation"])]
    served = load(build_parser().parse_args([*argv, "--caption", str(checkpoints["captioning"]), "--device", "cpu"]),
                  limits)  # fmt: skip
    return create_app(served, limits)


@pytest.fixture(scope="module")
def app(served_checkpoints):
    return make_app(served_checkpoints)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def models(served_checkpoints):
    return (LanguageModel.load(served_checkpoints["textgen"]), Translator.load(served_checkpoints["translation"]),
            Captioner.load(served_checkpoints["captioning"]))  # fmt: skip


def png(size=(64, 64), colour=(220, 30, 30)) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", size, colour).save(data, "PNG")
    return data.getvalue()


def picture_of(checkpoints, name="blue-square.png") -> bytes:
    return (checkpoints["captioning"].parent / "shapes" / name).read_bytes()


def test_health_and_models_say_what_is_loaded(client, served_checkpoints):
    assert client.get("/api/health").json() == {"status": "ok", "models": ["captioning", "textgen", "translation"]}
    models = client.get("/api/models").json()
    assert {task: info["task"] for task, info in models.items()} == {t: t for t in models}
    assert models["textgen"]["checkpoint"] == "textgen.pt"  # the name only: never the server's folders
    assert models["translation"]["checkpoint"] == ["model.pt"]
    assert models["translation"]["vocab_size"] > 0 and models["captioning"]["backbone"] == "resnet18"
    assert models["textgen"]["search_defaults"]["method"] == "sample"
    assert models["captioning"]["search_defaults"]["beam_size"] == 5
    assert all(info["parameters"] > 0 for info in models.values())
    assert client.get("/docs").status_code == 200 and "/api/translate" in client.get("/openapi.json").text


def test_generate_answers_as_the_library_does(client, models):
    lm = models[0]
    answer = client.post("/api/generate", json={"prompt": "Shall I", "method": "greedy", "max_len": 60}).json()
    assert answer == {"outputs": [lm.generate("Shall I", method="greedy", max_len=60)]}
    body = {"prompt": "Thou", "num_samples": 3, "temperature": 1.2, "seed": 7, "max_len": 40}
    samples = client.post("/api/generate", json=body).json()["outputs"]
    assert samples == lm.generate_many("Thou", 3, method="sample", temperature=1.2, seed=7, max_len=40)
    assert client.post("/api/generate", json=body).json()["outputs"] == samples  # a seed reproduces its samples
    beams = client.post("/api/generate", json={"prompt": "Thou", "method": "beam", "num_samples": 2, "max_len": 30})
    assert len(beams.json()["outputs"]) == 2


def events_of(text: str) -> list[tuple[str, dict]]:
    blocks = [b for b in text.split("\n\n") if b.strip()]
    return [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
            for b in blocks]  # fmt: skip


def test_the_stream_sends_pieces_in_order_then_one_closing_event(client, models):
    body = {"prompt": "Shall I", "method": "greedy", "max_len": 80}
    with client.stream("POST", "/api/generate/stream", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = events_of(response.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1 and set(kinds[:-1]) == {"piece"} and len(kinds) > 10
    text = "".join(data["text"] for kind, data in events[:-1])
    assert text == events[-1][1]["text"] == models[0].generate("Shall I", method="greedy", max_len=80)
    sampled = {"prompt": "Thou", "temperature": 0.9, "seed": 3, "max_len": 50}
    streamed = events_of(client.post("/api/generate/stream", json=sampled).text)[-1][1]["text"]
    assert streamed == client.post("/api/generate", json=sampled).json()["outputs"][0]


def test_translate_answers_as_the_library_does_with_nbest_and_attention(client, models):
    translator, sentences = models[1], ["a b c d", "e f", "g a b c d e"]
    answer = client.post("/api/translate", json={"sentences": sentences}).json()
    assert answer == {"translations": translator.translate(sentences)} and answer["translations"][0] == "d c b a"
    answer = client.post("/api/translate", json={"sentences": sentences[:2], "beam_size": 4, "n_best": 3,
                                                 "attention": True}).json()  # fmt: skip
    nbest = translator.search(sentences[:2], beam_size=4, n_best=3)
    assert [[h["text"] for h in n] for n in answer["nbest"]] == [[translator.target_text(h.tokens) for h in n]
                                                                  for n in nbest]  # fmt: skip
    assert [h["score"] for h in answer["nbest"][0]] == pytest.approx([h.score for h in nbest[0]], abs=1e-4)
    first = answer["attention"][0]
    assert first["source"] == ["a", "b", "c", "d", "</s>"] and first["target"][:4] == ["d", "c", "b", "a"]
    assert len(first["weights"]) == len(first["target"]) and all(len(r) == 5 for r in first["weights"])
    assert all(sum(row) == pytest.approx(1, abs=1e-3) for row in first["weights"])
    assert max(range(5), key=lambda s: first["weights"][0][s]) == 3  # "d" is written while looking at "d"


def test_caption_answers_as_the_library_does_with_maps(client, models, served_checkpoints):
    captioner = models[2]
    for name in ("blue-square.png", "red-circle.png"):
        answer = client.post("/api/caption", files={"image": (name, picture_of(served_checkpoints, name))}).json()
        expected = captioner.caption([served_checkpoints["captioning"].parent / "shapes" / name])
        assert answer["captions"] == expected and answer["view"] == {"left": 0.0, "top": 0.0, "side": 64}
    form = {"attention": "true", "method": "beam", "beam_size": "3", "n_best": "2"}
    image = {"image": ("p.png", picture_of(served_checkpoints))}
    answer = client.post("/api/caption", files=image, data=form).json()
    assert len(answer["captions"]) == 2 and answer["captions"][0] == "a blue square."
    words, maps = answer["attention"]["words"], answer["attention"]["maps"]
    assert len(maps) == len(words) and all(len(m) == 4 and len(m[0]) == 4 for m in maps)  # a 4 x 4 grid at 128 px
    assert all(sum(sum(row) for row in m) == pytest.approx(1, abs=1e-3) for m in maps)
    wide = client.post("/api/caption", files={"image": ("w.png", png((128, 64)))}).json()["view"]
    assert wide == {"left": 0.0, "top": -32.0, "side": 128}  # padded to a square on white


BAD_REQUESTS = [  # (endpoint, JSON body, status, words the one-line error must hold)
    ("generate", {"prompt": 5}, 422, "prompt: input should be a valid string"),
    ("generate", {"prompt": "a", "temprature": 1}, 422, "temprature: unknown field"),
    ("generate", {"prompt": "a", "checkpoint": "/etc/passwd"}, 422, "checkpoint: unknown field"),
    ("generate", {"temperature": -1}, 422, "temperature"),
    ("generate", {"temperature": "hot"}, 422, "temperature: input should be a valid number"),
    ("generate", {"method": "greedy", "temperature": 0.5}, 422, "temperature is an option of method sample"),
    ("generate", {"method": "topk"}, 422, "method: input should be 'greedy', 'sample' or 'beam'"),
    ("generate", {"max_len": 2.5}, 422, "max_len"),
    ("generate", {"max_len": 301}, 422, "max_len = 301 is over this server's bound of 300"),
    ("generate", {"max_len": 0}, 422, "max_len"),
    ("generate", {"top_p": 1.5}, 422, "top_p"),
    ("generate", {"seed": -3}, 422, "seed"),
    ("generate", {"num_samples": 5}, 422, "num_samples = 5 is over this server's bound of 4"),
    ("generate", {"num_samples": 0}, 422, "num_samples = 0"),
    ("generate", {"method": "beam", "num_samples": 4, "beam_size": 2}, 422, "num_samples = 4 is over beam_size = 2"),
    ("generate", {"method": "beam", "n_best": 3}, 422, "n_best: /api/generate returns num_samples continuations"),
    ("generate", {"max_len": True}, 422, "max_len: input should be a valid integer"),
    ("generate", {"max_len": "5"}, 422, "max_len: input should be a valid integer"),
    ("generate", {"num_samples": "2"}, 422, "num_samples: input should be a valid integer"),
    ("generate", {"temperature": True}, 422, "temperature: input should be a valid number"),
    ("generate", {"temperature": 1e-45}, 422, "temperature = 1e-45 is out of range"),
    ("generate", {"top_p": float("nan")}, 422, "top_p"),
    ("generate", {"prompt": "a\udfffb"}, 422, "prompt[0] is not text: a lone surrogate at character 1"),
    ("generate", {"method": "beam", "length_penalty": 200}, 422, "length_penalty = 200 is out of range"),
    ("generate/stream", {"prompt": "x" * 201}, 422, "prompt[0] has 201 characters"),
    ("generate/stream", {"prompt": "\ud800"}, 422, "a lone surrogate"),
    ("generate", {"prompt": "x" * 201}, 422, "prompt[0] has 201 characters, over this server's bound of 200"),
    ("generate", [1, 2], 422, "input should be a valid dictionary"),
    ("generate/stream", {"method": "beam"}, 422, "the stream sends one continuation"),
    ("generate/stream", {"num_samples": 2}, 422, "the stream sends one continuation"),
    ("generate/stream", {"top_k": -1}, 422, "top_k"),
    ("translate", {}, 422, "sentences: field required"),
    ("translate", {"sentences": "a b"}, 422, "sentences: input should be a valid list"),
    ("translate", {"sentences": []}, 422, "sentences holds 0; between 1 and 8"),
    ("translate", {"sentences": ["a"] * 9}, 422, "sentences holds 9; between 1 and 8"),
    ("translate", {"sentences": ["a", None]}, 422, "sentences.1: input should be a valid string"),
    ("translate", {"sentences": ["a " * 101]}, 422, "sentences[0] has 202 characters"),
    ("translate", {"sentences": ["a"], "beam_size": 9}, 422, "beam_size = 9 is over this server's bound of 8"),
    ("translate", {"sentences": ["a"], "beam_size": 2, "n_best": 3}, 422, "n_best"),
    ("translate", {"sentences": ["a"], "method": "greedy", "length_penalty": 1}, 422, "length_penalty is an option"),
    ("translate", {"sentences": ["a"], "attention": "maybe"}, 422, "attention: input should be a valid boolean"),
    ("translate", {"sentences": ["a"], "attention": "yes"}, 422, "attention: input should be a valid boolean"),
    ("translate", {"sentences": ["a", "\ud800"]}, 422, "sentences[1] is not text: a lone surrogate at character 0"),
    ("translate", {"sentences": ["a"], "length_penalty": 1e308}, 422, "length_penalty = 1e+308 is out of range"),
    ("translate", {"sentences": ["a"], "method": "sample", "temperature": 1e300}, 422, "temperature = 1e+300"),
]


def one_line_error(response, status: int, words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    assert words.lower() in body["error"].lower(), body["error"]
    return body["error"]


@pytest.mark.parametrize("endpoint, body, status, words", BAD_REQUESTS)
def test_bad_requests_get_one_line_and_the_server_goes_on(client, endpoint, body, status, words):
    raw = json.dumps(body)  # (escapes a lone surrogate, writes NaN as Python's json reads it)
    one_line_error(client.post(f"/api/{endpoint}", content=raw, headers={"content-type": "application/json"}), status,
                   words)  # fmt: skip
    assert client.get("/api/health").status_code == 200


def test_malformed_bodies_and_bodies_over_the_bound(client):
    as_json = {"content-type": "application/json"}
    for endpoint in ("generate", "generate/stream", "translate"):
        response = client.post(f"/api/{endpoint}", content=b'{"prompt": "a",', headers=as_json)
        one_line_error(response, 400, "the body is not valid JSON")
        response = client.post(f"/api/{endpoint}", content=b"\xff\xfe{", headers=as_json)
        one_line_error(response, 400, "the body cannot be read as JSON or form data")
        big = {"prompt": "a" * 30_000, "sentences": ["a"]}
        one_line_error(client.post(f"/api/{endpoint}", json=big), 413, "over this server's bound of 20000")


def test_unknown_paths_and_methods_get_one_line(client):
    one_line_error(client.get("/api/nothing"), 404, "not found (GET /api/nothing)")
    one_line_error(client.get("/api/translate"), 405, "method not allowed")
    for escape in ("../" * 2, "%2e%2e/" * 2, "..%2f" * 2):  # no request reads a file outside the page's folder
        one_line_error(client.get("/static/" + escape + "core/lm.py"), 404, "not found")


def test_a_source_over_the_models_max_source_len_is_refused(served_checkpoints):
    argv = ["--translate", str(served_checkpoints["translation"]), "--max-source-len", "4"]
    limits = Limits(**LIMITS)
    with TestClient(create_app(load(build_parser().parse_args(argv), limits), limits)) as client:
        one_line_error(
            client.post("/api/translate", json={"sentences": ["a b c d e f"]}),
            422,
            "sentences[0] has 6 source tokens, more than 4",
        )
        one_line_error(client.post("/api/generate", json={"prompt": "a"}), 404, "no textgen model is loaded")
        one_line_error(client.post("/api/caption", files={"image": ("a.png", png())}), 404, "--caption")


def truncated_png() -> bytes:
    return png()[:60]


def bomb_png() -> bytes:
    """A PNG whose header claims 20000 x 20000 pixels in a few hundred bytes (it is never decoded)."""
    data = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(data, "PNG")
    return data.getvalue()


BAD_PICTURES = [  # (files, form, status, words)
    ({"image": ("a.txt", b"not a picture at all")}, {}, 422, "image is not a picture this server can read"),
    ({"image": ("a.png", truncated_png())}, {}, 422, "image cannot be decoded"),
    ({"image": ("a.png", b"")}, {}, 422, "image is not a picture"),
    ({"image": ("big.png", png((400, 400)))}, {}, 413, "image has 400 x 400 pixels, over this server's bound of 90000"),
    ({"image": ("bomb.png", bomb_png())}, {}, 413, "image size (400000000 pixels) exceeds"),
    ({"image": ("noise.bmp", b"BM" + bytes(120_000))}, {}, 413, "over this server's bound"),
    ({}, {}, 422, "image: field required"),
    ({"picture": ("a.png", png())}, {}, 422, "image: field required"),
    ({"image": ("a.png", png())}, {"beam_size": "99"}, 422, "beam_size = 99 is over this server's bound of 8"),
    ({"image": ("a.png", png())}, {"beam_size": "two"}, 422, "beam_size: input should be a valid integer"),
    ({"image": ("a.png", png())}, {"method": "greedy", "n_best": "2"}, 422, "n_best is an option of method beam"),
    ({"image": ("a.png", png())}, {"path": "/etc/passwd"}, 422, "path: unknown field"),
    ({"image": ("a.png", png())}, {"attention": "perhaps"}, 422, "attention: input should be a valid boolean"),
]


@pytest.mark.parametrize("files, form, status, words", BAD_PICTURES)
def test_bad_pictures_get_one_line(client, files, form, status, words):
    one_line_error(client.post("/api/caption", files=files, data=form), status, words)
    assert client.get("/api/health").status_code == 200


def test_a_path_in_place_of_a_picture_names_no_file(client):
    one_line_error(client.post("/api/caption", data={"image": "/etc/passwd"}), 422, "image")


def ask_together(app, requests):
    """Send every (endpoint, body) at once to `app` and return the answers in order."""

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
                answers = await asyncio.gather(*(client.post(f"/api/{e}", json=b) for e, b in requests))
        return [(a.status_code, a.json()) for a in answers]

    return asyncio.run(run())


def mixed_requests():
    words = "a b c d e f g".split()
    requests = []
    for i in range(16):
        method = {"method": "greedy"} if i % 2 else {"method": "beam", "beam_size": 3, "n_best": 2}
        sentences = [" ".join(words[: 2 + (i * 3 + k) % 6]) for k in range(1 + i % 3)]  # mixed lengths and counts
        requests.append(("translate", {"sentences": sentences, **method}))
    requests += [("generate", {"prompt": p, "method": "greedy", "max_len": 20 + 7 * i})
                 for i, p in enumerate(["S", "Thou art", "And summer's lease", "Rough"])]  # fmt: skip
    requests += [("generate", {"prompt": "Thou", "seed": s, "max_len": 25}) for s in (1, 2)]
    return requests


def test_sixteen_concurrent_requests_get_the_answers_each_gets_alone(served_checkpoints):
    requests = mixed_requests()
    app = make_app(served_checkpoints, max_wait_ms=50)
    together = ask_together(app, requests)
    assert max(app.state.models.batchers["translation"].batches) > 1, "requests that arrived together were batched"
    one_at_a_time = make_app(served_checkpoints)
    alone = [answer for request in requests for answer in ask_together(one_at_a_time, [request])]
    assert [status for status, _ in together] == [200] * len(requests)
    for (_, batched), (_, single) in zip(together, alone):
        assert batched.keys() == single.keys()
        assert batched.get("translations") == single.get("translations")
        assert batched.get("outputs") == single.get("outputs")
        for n_batched, n_single in zip(batched.get("nbest", []), single.get("nbest", [])):
            assert [h["text"] for h in n_batched] == [h["text"] for h in n_single]
            assert [h["score"] for h in n_batched] == pytest.approx([h["score"] for h in n_single], abs=1e-4)


def test_batching_off_decodes_each_request_alone(served_checkpoints):
    app = make_app(served_checkpoints, max_batch=1, max_wait_ms=50)
    answers = ask_together(app, mixed_requests()[:6])
    assert [status for status, _ in answers] == [200] * 6 and app.state.models.batchers["translation"].batches == [
        1
    ] * 6


def test_a_full_queue_is_503_with_retry_after_and_health_answers_while_a_batch_decodes(served_checkpoints):
    app = make_app(served_checkpoints, max_queue=2, max_batch=1)
    batcher, release = app.state.models.batchers["translation"], threading.Event()
    run = batcher.run
    batcher.run = lambda kind, requests: (release.wait(30), run(kind, requests))[1]

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
                body = {"sentences": ["a b"]}
                waiting = []
                for _ in range(3):  # the first decodes (held), the next two wait: the queue is full
                    waiting.append(asyncio.create_task(client.post("/api/translate", json=body)))
                    await asyncio.sleep(0.1)
                started = time.monotonic()
                health = await client.get("/api/health")
                health_took = time.monotonic() - started
                refused = await client.post("/api/translate", json=body)
                release.set()
                return health, health_took, refused, await asyncio.gather(*waiting)

    health, health_took, refused, answered = asyncio.run(scenario())
    assert health.status_code == 200 and health_took < 1
    error = one_line_error(refused, 503, "requests wait for the translation model")
    assert refused.headers["retry-after"] == "1" and "retry" in error
    assert [a.json()["translations"] for a in answered] == [["b a"]] * 3


def test_a_client_that_leaves_mid_stream_stops_its_generation():
    made, finished = [], threading.Event()

    class Endless:
        def stream(self, prompt, config):
            try:
                while True:
                    made.append(1)
                    time.sleep(0.002)
                    yield "x"
            finally:
                finished.set()

    async def leave_after_three():
        events = stream_events(Endless(), "", None)
        for _ in range(3):
            await events.__anext__()
        await events.aclose()  # what the server does when the client goes

    asyncio.run(leave_after_three())
    assert finished.wait(5), "the generation stopped"
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count


def test_a_request_that_fails_in_a_batch_fails_alone():
    def run(kind, requests):
        if "bad" in requests:
            raise ValueError("bad input")
        return [r.upper() for r in requests]

    async def scenario():
        batcher = Batcher("m", run, 8, 0.05, max_queue=8)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit("k", r) for r in ("one", "bad", "two")), return_exceptions=True)
        await batcher.stop()
        return answers, batcher.batches

    answers, batches = asyncio.run(scenario())
    assert batches == [3] and answers[0] == "ONE" and answers[2] == "TWO" and isinstance(answers[1], ValueError)


def test_the_batcher_refuses_beyond_its_queue():
    release = threading.Event()

    async def scenario():
        batcher = Batcher("m", lambda kind, requests: release.wait(10) and requests, 4, 0.0, max_queue=1)
        batcher.start()
        first = asyncio.create_task(batcher.submit("k", 1))
        await asyncio.sleep(0.05)  # taken by the worker
        second = asyncio.create_task(batcher.submit("k", 2))
        await asyncio.sleep(0.05)  # waits in the queue
        with pytest.raises(QueueFull):
            await batcher.submit("k", 3)
        release.set()
        answers = await asyncio.gather(first, second)
        await batcher.stop()
        return answers

    assert asyncio.run(scenario()) == [1, 2]


def test_serve_with_no_model_says_so_in_one_line():
    process = serve("--port", "0")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and err.strip().splitlines() == [
        "error: no model to serve: give --textgen, --translate or --caption (or several)"
    ]


def test_a_port_in_use_is_one_line_and_port_0_prints_the_port_chosen(served_checkpoints):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve("--textgen", str(served_checkpoints["textgen"]), "--port", str(port))
        out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and err.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    process = serve("--textgen", str(served_checkpoints["textgen"]), "--port", "0")
    assert process.stdout is not None
    address = process.stdout.readline().split()[3].rstrip("/")
    assert not address.endswith(":0")
    assert httpx.get(address + "/api/health", timeout=10).status_code == 200  # answered at once: bound before
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0


def test_sigterm_answers_the_requests_in_flight_then_exits_0(served_checkpoints):
    port = free_port()
    process = serve("--textgen", str(served_checkpoints["textgen"]), "--port", str(port), "--max-len", "5000")
    assert process.stdout is not None
    assert process.stdout.readline().strip() == f"serving textgen at http://127.0.0.1:{port}/ (API: /docs)"
    wait_until_up(process, f"http://127.0.0.1:{port}")
    body = {"prompt": "Thou", "num_samples": 4, "seed": 1, "max_len": 5000}
    answer: list = []

    def ask() -> None:
        answer.append(httpx.post(f"http://127.0.0.1:{port}/api/generate", json=body, timeout=120))
        answer.append(time.monotonic())

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.5)  # the request is being decoded
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    asking.join()
    assert process.returncode == 0, err
    assert answer[0].status_code == 200 and len(answer[0].json()["outputs"]) == 4
    assert answer[1] > signalled, "the answer came after the signal: it was in flight"
    assert "every request in flight was answered" in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health")
