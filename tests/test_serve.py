"""mode=serve: the HTTP API over the predictors, dynamic batching, bad requests, shutdown."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import nlp_lstm
from nlp_lstm.serve.app import create_app, shape_output
from nlp_lstm.serve.settings import ServeConfig
from tests.cli_helpers import REPO, run_main

TEXTS = ["Mr John Smith said on a deal in Paris .", "Reuters Corp and Google Corp .",
         "the report was new .", "in Berlin Mr Chen said ."]  # fmt: skip


@contextlib.contextmanager
def live_server(predictors: dict, **serve):
    """The app over ``predictors`` on a free loopback port, in this process; yields the port
    and the app's serving state."""
    import uvicorn

    app = create_app(lambda: predictors, ServeConfig(**serve))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    wait_ready(port)
    try:
        yield port, app.app.state.serving
    finally:
        server.should_exit = True
        thread.join(10)


def wait_ready(port: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            if request(port, "GET", "/health")[0] == 200:
                return
        time.sleep(0.05)
    raise TimeoutError("the server never became ready")


def request(port: int, method: str, path: str, body=None, raw: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict]:  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})  # fmt: skip
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, json.loads(payload) if payload else {}


def predict(port: int, name: str, inputs, options=None) -> tuple[int, dict]:
    return request(port, "POST", f"/v1/models/{name}/predict", {"inputs": inputs, "options": options or {}})  # fmt: skip


@pytest.fixture(scope="module")
def predictors(trained_models) -> dict:
    ckpt = trained_models["ckpt"]
    return {name: nlp_lstm.load(ckpt[task], "cpu") for name, task in
            (("ner", "ner"), ("sst", "sentiment"), ("lm", "charlm"), ("mt", "translate"), ("fc", "forecast"))}  # fmt: skip


def offline(predictor, inputs, options=None) -> list:
    options = options or {}
    return [shape_output(predictor.task, r, options) for r in predictor.predict(inputs, **options)]


def close(a, b, tol: float = 1e-4) -> bool:
    """The same answer: equal strings, labels, offsets and shapes; numbers within ``tol``.
    A float32 LSTM's arithmetic differs in the 7th digit with the batch's shape, and an
    entity's probability sums that over the sentence's tokens (the offline API's own
    ``tagger.predict([a])`` and ``tagger.predict([a, b])`` differ so, by up to ~3e-5 on
    CoNLL sentences), so scores are compared to 4 decimals and everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def series_table(trained_models, rows: int) -> dict:
    lines = trained_models["files"]["series"].read_text().splitlines()
    header, *body = [line.split(",") for line in lines]
    body = body[-rows:]
    return {name: [row[i] if i == 0 else float(row[i]) for row in body] for i, name in enumerate(header)}  # fmt: skip


# ---------------------------------------------------------------------------- answers


def test_every_task_answers_as_the_offline_predictor(predictors, trained_models):
    with live_server(predictors) as (port, _):
        status, models = request(port, "GET", "/v1/models")
        assert status == 200
        assert {m["name"]: m["task"] for m in models["models"]} == {
            "ner": "ner", "sst": "sentiment", "lm": "charlm", "mt": "translate", "fc": "forecast"}  # fmt: skip
        cases = {
            "ner": (TEXTS + [["Mr", "Lee", "in", "Oslo"]], {}),
            "sst": (["a great film", "a dull and boring film"], {}),
            "lm": (["KING: ", "To be"], {"length": 20, "seed": 3, "temperature": 0.7}),
            "mt": (
                (trained_models["root"] / "mt_dev.de").read_text().splitlines()[:3],
                {"beam_size": 3, "attention": True},
            ),  # fmt: skip
            "fc": ([series_table(trained_models, 30)], {}),
        }
        for name, (inputs, options) in cases.items():
            status, answer = predict(port, name, inputs, options)
            assert status == 200, answer
            assert answer["model"] == name
            expected = json.loads(json.dumps(offline(predictors[name], inputs, options)))
            assert answer["outputs"] == expected, name  # the same call: exactly equal
        for entities, text in zip(answer_ner := predict(port, "ner", TEXTS)[1]["outputs"], TEXTS, strict=True):  # fmt: skip
            assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
        assert any(answer_ner)
        status, plain = predict(port, "mt", ["ein hund"], {"beam_size": 2})
        assert status == 200 and set(plain["outputs"][0]) == {"text", "score"}


def test_concurrent_requests_share_a_call_and_each_gets_its_own_answer(predictors):
    tagger = predictors["ner"]
    alone = {text: offline(tagger, [text])[0] for text in TEXTS}
    with live_server(predictors, max_wait_ms=300, max_batch_size=64) as (port, state):
        batcher = state["batchers"]["ner"]
        calls = batcher.calls
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: predict(port, "ner", [t]), TEXTS * 2))
        assert batcher.calls - calls < len(TEXTS) * 2  # gathered into fewer calls
        for text, (status, answer) in zip(TEXTS * 2, answers, strict=True):
            assert status == 200 and close(answer["outputs"], [alone[text]]), (answer, alone[text])


def test_streamed_generation_is_the_offline_sample(predictors):
    generator = predictors["lm"]
    expected = generator.generate("KING: ", length=30, seed=5, temperature=0.9)
    with live_server(predictors) as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = json.dumps(
            {"prompt": "KING: ", "options": {"length": 30, "seed": 5, "temperature": 0.9}}
        )
        connection.request("POST", "/v1/models/lm/stream", body=body, headers={"content-type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")  # fmt: skip
        events = response.read().decode().strip().split("\n\n")
        chars = [json.loads(e.removeprefix("data: "))["text"] for e in events if e.startswith("data: ")]  # fmt: skip
        assert "".join(chars) == expected and len(chars) == 30
        assert events[-1].startswith("event: done")
        assert request(port, "POST", "/v1/models/ner/stream", {"prompt": "x"})[0] == 422


# ---------------------------------------------------------------------------- bad requests


BAD = [  # (method, path, body or raw bytes, status, fragment of the error)
    ("POST", "/v1/models/ner/predict", b'{"inputs": ["x"', 400, "malformed JSON"),
    ("POST", "/v1/models/ner/predict", {"inputs": [3]}, 422, "input 0"),
    ("POST", "/v1/models/ner/predict", {"inputs": "text"}, 422, "inputs"),
    ("POST", "/v1/models/ner/predict", {"texts": ["x"]}, 422, "inputs"),
    ("POST", "/v1/models/ner/predict", [1, 2], 422, "body"),
    ("POST", "/v1/models/ner/predict", {"inputs": []}, 422, "empty"),
    ("POST", "/v1/models/ner/predict", {"inputs": ["x"] * 9}, 422, "max_inputs"),
    ("POST", "/v1/models/ner/predict", {"inputs": ["x" * 101]}, 422, "max_chars"),
    ("POST", "/v1/models/ner/predict", {"inputs": ["x"], "options": {"beam": 2}}, 422, "unknown option"),
    ("POST", "/v1/models/mt/predict", {"inputs": ["x"], "options": {"beam_size": "3"}}, 422, "beam_size must be int"),
    ("POST", "/v1/models/mt/predict", {"inputs": ["x"], "options": {"beam_size": 0}}, 422, "beam_size must be in"),
    ("POST", "/v1/models/lm/predict", {"inputs": ["\u00e6\u00f8"]}, 422, "never seen"),
    ("POST", "/v1/models/fc/predict", {"inputs": ["/etc/passwd"]}, 422, "object of columns"),
    ("POST", "/v1/models/fc/predict", {"inputs": [{"value": [1.0, 2.0]}]}, 422, "no time column"),
    ("POST", "/v1/models/nope/predict", {"inputs": ["x"]}, 404, "no model named 'nope'"),
    ("GET", "/v1/models/ner/predict", None, 405, "Method Not Allowed"),
    ("GET", "/nowhere", None, 404, "Not Found"),
    ("POST", "/v1/models/ner/predict", b'{"inputs": ["' + b"y" * 3000 + b'"]}', 413, "max_body_bytes"),
]  # fmt: skip


def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(predictors):
    with live_server(predictors, max_inputs=8, max_chars=100, max_body_bytes=2000) as (port, _):
        for method, path, body, status, fragment in BAD:
            raw = body if isinstance(body, bytes) else None
            got, answer = request(port, method, path, None if raw else body, raw=raw)
            assert (got, fragment in answer.get("error", "")) == (status, True), (
                path,
                body,
                answer,
            )
        # a body over the limit without a declared length (chunked) is refused too
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/v1/models/ner/predict")
        connection.putheader("content-type", "application/json")
        connection.putheader("transfer-encoding", "chunked")
        connection.endheaders()
        for _ in range(5):
            connection.send(b"3e8\r\n" + b" " * 1000 + b"\r\n")
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 413 and "max_body_bytes" in json.loads(response.read())["error"]
        assert predict(port, "ner", TEXTS[:1])[0] == 200


def test_a_failing_model_call_fails_only_its_own_request(predictors, monkeypatch):
    tagger = predictors["ner"]
    run = type(tagger).run

    def flaky(self, inputs, **options):
        if any(item == "boom ." for item in inputs):
            raise RuntimeError("the model broke")
        return run(self, inputs, **options)

    monkeypatch.setattr(type(tagger), "run", flaky)
    with live_server(predictors, max_wait_ms=300) as (port, _):
        with ThreadPoolExecutor(4) as pool:
            good = [pool.submit(predict, port, "ner", [t]) for t in TEXTS[:3]]
            bad = pool.submit(predict, port, "ner", ["boom ."])
            results = [f.result() for f in good]
            status, answer = bad.result()
        assert status == 500 and "the model broke" in answer["error"]
        assert [r[0] for r in results] == [200, 200, 200]
        assert predict(port, "ner", TEXTS[:1])[0] == 200


def test_a_client_that_leaves_costs_no_model_time(predictors, monkeypatch):
    tagger = predictors["ner"]
    run, seen = type(tagger).run, []

    def slow(self, inputs, **options):
        seen.append(list(inputs))
        time.sleep(0.4)
        return run(self, inputs, **options)

    monkeypatch.setattr(type(tagger), "run", slow)
    with live_server(predictors, max_wait_ms=0) as (port, _):
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(predict, port, "ner", ["first ."])
            time.sleep(0.1)  # the model is busy with "first"
            body = json.dumps({"inputs": ["left ."]}).encode()
            with socket.create_connection(("127.0.0.1", port)) as leaving:
                leaving.sendall(b"POST /v1/models/ner/predict HTTP/1.1\r\nHost: x\r\n"
                                b"content-type: application/json\r\ncontent-length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
                time.sleep(0.1)
            assert first.result()[0] == 200
        assert predict(port, "ner", ["after ."])[0] == 200
    assert ["left ."] not in seen and ["after ."] in seen


# ---------------------------------------------------------------------------- the command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mode_serve_serves_until_sigterm_and_finishes_what_it_started(trained_models):
    ckpt, port = trained_models["ckpt"], free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nlp_lstm", "mode=serve", f"ckpt={ckpt['charlm']}",
         f"serve.models={{ner: {ckpt['ner']}}}", f"serve.port={port}", "trainer.num_threads=1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    try:
        wait_ready(port)
        assert request(port, "GET", "/health")[1]["models"] == ["ner", "charlm"]
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(predict, port, "charlm", ["KING: "], {"length": 5000, "seed": 1})
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            status, answer = long.result()
        assert status == 200 and len(answer["outputs"][0]["text"]) == 5000
        assert process.wait(30) == 0
        with pytest.raises(OSError):
            request(port, "GET", "/health")
    finally:
        process.kill()


def test_mode_serve_refuses_bad_settings_in_one_line(trained_models, tmp_path):
    ckpt = trained_models["ckpt"]
    cases = [
        (["mode=serve"], "needs ckpt=PATH or serve.models"),
        (["mode=serve", "task=sentiment", f"ckpt={ckpt['ner']}"], "holds a ner model"),
        (["mode=serve", f"serve.models={{x: {tmp_path / 'none.pt'}}}"], "no checkpoint at"),
        (["mode=serve", f"ckpt={ckpt['ner']}", "serve.port=70000"], "serve.port must be in"),
        (["mode=serve", f"ckpt={ckpt['ner']}", "serve.max_wait_ms=-1"], "serve.max_wait_ms must be"),
    ]  # fmt: skip
    for args, fragment in cases:
        code, _, err = run_main(*args)
        lines = err.strip().splitlines()
        assert code == 2 and fragment in lines[-1] and lines[-1].startswith("error:"), (args, err)


def test_inside_answers_one_unit_of_every_module_as_inspect_computes_it(predictors, trained_models):
    import numpy as np

    table = series_table(trained_models, 40)
    inputs = {"ner": TEXTS[0], "sst": "a moving film", "lm": "To be, or", "mt": "ein hund",
              "fc": table}  # fmt: skip
    with live_server(predictors) as (port, _):
        for name, text in inputs.items():
            arrays = nlp_lstm.inspect(predictors[name], [text])[0]
            code, view = request(port, "POST", f"/v1/models/{name}/inside", {"input": text})
            assert code == 200, view
            module = view["module"]
            shape = view["modules"][module]
            assert view["layer"] == shape["layers"] - 1 and view["cell"] == 0
            assert view["positions"] == arrays[f"{module}.positions"].tolist()
            prefix = f"{module}.l{view['layer']}."
            for q, values in view["values"].items():
                assert np.allclose(values, arrays[prefix + q][:, 0], atol=1e-4), (name, q)
        # another unit, layer and direction of the tagger's encoder
        code, view = request(port, "POST", "/v1/models/ner/inside", {"input": TEXTS[0],
                             "module": "encoder", "layer": 0, "direction": "backward", "cell": 5})  # fmt: skip
        arrays = nlp_lstm.inspect(predictors["ner"], [TEXTS[0]])[0]
        assert code == 200 and np.allclose(view["values"]["f"], arrays["encoder.l0.reverse.f"][:, 5], atol=1e-4)  # fmt: skip
        for body, words in (({"input": "To be", "cell": 10_000}, "cells 0 to"),
                            ({"input": "To be", "module": "nope"}, "no module"),
                            ({"input": "To be", "direction": "backward"}, "directions"),
                            ({"input": ""}, "empty"), ({"input": 5}, "expected")):  # fmt: skip
            code, answer = request(port, "POST", "/v1/models/lm/inside", body)
            assert code == 422 and words in answer["error"], (body, answer)
        assert request(port, "GET", "/health")[0] == 200
