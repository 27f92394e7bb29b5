"""mode=serve under load: requests/s and latency of single-sentence NER requests at several
concurrencies, dynamic batching on and off in the same run, against the offline predictor's
batch-32 rate; multi-sentence requests; a long mixed run with bad requests interleaved.

    python scripts/bench_serve.py --ckpt runs/ner/RUN/checkpoints/best.pt \\
        --dev ../shared/data/conll2003/dev.txt --json scripts/results/bench_serve_cpu.json

The server runs as ``python -m nlp_lstm mode=serve`` in its own process at one torch thread;
the load comes from this process: asyncio clients over keep-alive HTTP/1.1 connections
(no client library; its own CPU time per request is reported). Every answer is checked
against the offline predictor's answer for the same sentence alone
(``tagger.predict([text])``): entities, labels and offsets must be equal, scores within
1e-3. A float32 LSTM's arithmetic differs in the 7th digit with the batch's shape and an
entity's probability adds that up over its sentence, so the offline ``tagger.predict([a])``
and ``tagger.predict([a, b])`` differ so too; how many answers were equal to the last digit,
and the largest score difference seen, are reported. Peak server RSS (VmHWM) is read after every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-3  # the largest score difference from the offline answer counted right


# ---------------------------------------------------------------------------- a lean client


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = self.writer = None

    async def send(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(port: int, requests: list[tuple[str, bytes]], concurrency: int) -> list[tuple]:
    """Send ``requests`` (path, body) from ``concurrency`` clients; returns
    ``(index, status, payload, seconds)`` for each."""
    results: list[tuple] = []
    order = iter(range(len(requests)))

    async def client() -> None:
        connection = Connection(port)
        for index in order:
            path, body = requests[index]
            start = time.perf_counter()
            try:
                status, payload = await connection.send("POST", path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                connection.close()
                status, payload = 0, b""
            results.append((index, status, payload, time.perf_counter() - start))
        connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return sorted(results)


# ---------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: str, port: int, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "nlp_lstm", "mode=serve", f"ckpt={ckpt}", f"serve.port={port}",
               "trainer.num_threads=1", "trainer.device=cpu", *args]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# ---------------------------------------------------------------------------- checks


def float_gap(a, b) -> float | None:
    """The largest difference between the numbers of two answers, or None when anything
    else differs (an entity, a label, an offset, a length)."""
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return abs(a - b) if ok else None
    if isinstance(a, dict) and isinstance(b, dict):
        gaps = [float_gap(a[k], b[k]) for k in a] if a.keys() == b.keys() else [None]
    elif isinstance(a, list) and isinstance(b, list):
        gaps = [float_gap(x, y) for x, y in zip(a, b, strict=False)] if len(a) == len(b) else [None]
    else:
        return 0.0 if a == b else None
    return None if None in gaps else max(gaps, default=0.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(results, expected, sentences_per_request: int, seconds: float, cpu: float) -> dict:
    """Rates, latencies, errors and answer checks of one load run."""
    ok = [r for r in results if r[1] == 200]
    wrong = exact = 0
    largest = 0.0
    for index, _, payload, _ in ok:
        gap = float_gap(json.loads(payload)["outputs"], expected[index])
        wrong += gap is None or gap > SCORE_TOLERANCE
        exact += gap == 0.0
        largest = max(largest, gap or 0.0)
    latencies = [r[3] * 1000 for r in results]
    return {
        "requests": len(results),
        "requests_per_s": round(len(results) / seconds, 1),
        "sentences_per_s": round(len(results) * sentences_per_request / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "errors": len(results) - len(ok),
        "error_statuses": dict(Counter(r[1] for r in results if r[1] != 200)),
        "wrong_answers": wrong,
        "exactly_equal": exact,
        "largest_score_gap": largest,
        "client_cpu_ms_per_request": round(cpu * 1000 / len(results), 3),
    }


def timed_load(port, requests, concurrency):
    cpu, start = time.process_time(), time.perf_counter()
    results = asyncio.run(load(port, requests, concurrency))
    return results, time.perf_counter() - start, time.process_time() - cpu


# ---------------------------------------------------------------------------- main


def dev_texts(path: str, count: int) -> list[str]:
    from nlp_lstm.data.conll import read_conll
    from nlp_lstm.data.rawtext import detokenize

    sentences = [s for s in read_conll(Path(path), what="dev file") if len(s.tokens) > 1]
    random.Random(0).shuffle(sentences)
    return [detokenize(s.tokens)[0] for s in sentences[:count]]


def offline(ckpt: str, texts: list[str], batch_texts: list[list[str]]) -> tuple[list, list, float]:
    """Each text's answer alone, each batch's answers, and the batch-32 sentences/s."""
    import torch

    import nlp_lstm
    from nlp_lstm.tasks.common import plain_result

    torch.set_num_threads(1)
    tagger = nlp_lstm.load(ckpt, "cpu")
    tagger.predict(texts[:64])  # warm-up (a list of str given to tagger() is one token list)
    alone = [plain_result(tagger.predict([t])[0]) for t in texts]
    batches = [plain_result(tagger.predict(b)) for b in batch_texts]
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        tagger.predict(texts[i : i + 32])
    rate = len(texts) / (time.perf_counter() - start)
    return json.loads(json.dumps(alone)), json.loads(json.dumps(batches)), rate


def bad_requests(texts: list[str]) -> list[tuple[str, bytes, int]]:
    """(path, body, expected status) of each kind of bad request."""
    predict = "/v1/models/ner/predict"
    return [
        (predict, b'{"inputs": ["unterminated', 400),
        (predict, json.dumps({"inputs": [42]}).encode(), 422),
        (predict, json.dumps({"texts": texts[:1]}).encode(), 422),
        ("/v1/models/nope/predict", json.dumps({"inputs": texts[:1]}).encode(), 404),
        (predict, json.dumps({"inputs": texts[:1] * 300}).encode(), 422),
        (predict, json.dumps({"inputs": ["x" * 20_000]}).encode(), 422),
        (predict, json.dumps({"inputs": ["y" * 1_100_000]}).encode(), 413),
        (predict, json.dumps({"inputs": texts[:1], "options": {"beam_size": 2}}).encode(), 422),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--dev", required=True, help="a CoNLL file: its sentences are the requests")
    parser.add_argument("--requests", type=int, default=2000, help="requests per load run")
    parser.add_argument("--mixed", type=int, default=20000, help="requests of the mixed run")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--json")
    args = parser.parse_args()

    texts = dev_texts(args.dev, args.requests)
    batch_texts = [texts[i : i + 64] for i in range(0, 64 * 20, 64)]
    expected, expected_batches, ceiling = offline(args.ckpt, texts, batch_texts)
    print(f"offline predictor, batches of 32, 1 thread: {ceiling:,.0f} sentences/s")
    singles = [("/v1/models/ner/predict", json.dumps({"inputs": [t]}).encode()) for t in texts]
    report: dict = {"offline_batch32_sentences_per_s": round(ceiling, 1), "runs": [],
                    "max_wait_ms": args.max_wait_ms, "requests_per_run": len(texts)}  # fmt: skip

    for batching in (True, False):
        port = free_port()
        server = start_server(args.ckpt, port, f"serve.batching={str(batching).lower()}",
                              f"serve.max_wait_ms={args.max_wait_ms}")  # fmt: skip
        try:
            timed_load(port, singles[:200], 8)  # warm-up
            if batching:  # the server's own cost of a request: /health needs no model
                report["server_overhead_ms_per_request"] = asyncio.run(_health(port, 2000))
            for concurrency in (1, 8, 32, 64):
                results, seconds, cpu = timed_load(port, singles, concurrency)
                row = {"batching": batching, "concurrency": concurrency, "kind": "single",
                       **summarize(results, [[e] for e in expected], 1, seconds, cpu)}  # fmt: skip
                row["rss_mib"], row["peak_rss_mib"] = map(round, rss_mib(server.pid))
                report["runs"].append(row)
                print(row)
            if batching:
                many = [("/v1/models/ner/predict", json.dumps({"inputs": b}).encode()) for b in batch_texts]  # fmt: skip
                results, seconds, cpu = timed_load(port, many * 3, 4)
                row = {"batching": batching, "concurrency": 4, "kind": "64 texts a request",
                       **summarize(results, expected_batches * 3, 64, seconds, cpu)}  # fmt: skip
                row["share_of_offline"] = round(row["sentences_per_s"] / ceiling, 3)
                row["rss_mib"], row["peak_rss_mib"] = map(round, rss_mib(server.pid))
                report["runs"].append(row)
                print(row)
                report["mixed"] = mixed_run(port, server.pid, singles, expected, texts, args.mixed)
                print(report["mixed"])
        finally:
            server.send_signal(signal.SIGTERM)
            report.setdefault("exit_codes", []).append(server.wait(60))

    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


async def _health(port: int, count: int) -> float:
    """Milliseconds per GET /health over one connection: the server's own cost of a
    request (HTTP parsing, routing, JSON), with no model work."""
    connection = Connection(port)
    start = time.perf_counter()
    for _ in range(count):
        await connection.send("GET", "/health")
    connection.close()
    return round((time.perf_counter() - start) * 1000 / count, 3)


def mixed_run(port: int, pid: int, singles, expected, texts, total: int) -> dict:
    """``total`` requests at concurrency 32, every 50th a bad one (each kind in turn)."""
    bad = bad_requests(texts)
    requests, want = [], []
    for i in range(total):
        if i % 50 == 25:
            path, body, status = bad[(i // 50) % len(bad)]
            requests.append((path, body))
            want.append(("bad", status))
        else:
            requests.append(singles[i % len(singles)])
            want.append(("good", i % len(singles)))
    warm_rss, _ = rss_mib(pid)
    results, seconds, _ = timed_load(port, requests, 32)
    end_rss, peak = rss_mib(pid)
    five_xx = sum(1 for r in results if r[1] >= 500 or r[1] == 0)
    bad_status_wrong = wrong = 0
    largest = 0.0
    for (_, status, payload, _), (kind, target) in zip(results, want, strict=True):
        if kind == "good":
            gap = (
                float_gap(json.loads(payload)["outputs"], [expected[target]])
                if status == 200
                else None
            )
            wrong += gap is None or gap > SCORE_TOLERANCE
            largest = max(largest, gap or 0.0)
        else:
            bad_status_wrong += status != target
    return {"requests": total, "bad_requests": sum(kind == "bad" for kind, _ in want),
            "seconds": round(seconds, 1), "five_xx": five_xx, "wrong_answers": wrong,
            "bad_with_wrong_status": bad_status_wrong, "largest_score_gap": largest, "rss_after_warmup_mib": round(warm_rss),
            "rss_at_end_mib": round(end_rss), "rss_growth": round(end_rss / warm_rss - 1, 3),
            "peak_rss_mib": round(peak)}  # fmt: skip


def print_table(report: dict) -> None:
    print(f"\noffline batch-32 ceiling: {report['offline_batch32_sentences_per_s']:,.0f} sentences/s;"
          f" server overhead {report.get('server_overhead_ms_per_request')} ms/request (GET /health)")  # fmt: skip
    print(f"{'batching':>8} {'kind':>18} {'conc':>4} {'req/s':>8} {'sent/s':>8} {'p50':>7} "
          f"{'p95':>7} {'p99':>7} {'err':>4} {'wrong':>5} {'exact':>6} {'cli ms':>6} {'RSS':>5} {'peak':>5}")  # fmt: skip
    for r in report["runs"]:
        print(f"{str(r['batching']):>8} {r['kind']:>18} {r['concurrency']:>4} {r['requests_per_s']:>8,.0f} "
              f"{r['sentences_per_s']:>8,.0f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} "
              f"{r['errors']:>4} {r['wrong_answers']:>5} {r['exactly_equal']:>6} "
              f"{r['client_cpu_ms_per_request']:>6.2f} {r['rss_mib']:>5} {r['peak_rss_mib']:>5}")  # fmt: skip
    runs = {(r["batching"], r["concurrency"], r["kind"]): r for r in report["runs"]}
    on, off = runs[(True, 32, "single")], runs[(False, 32, "single")]
    print(f"\nconcurrency 32: batching on / off = {on['requests_per_s'] / off['requests_per_s']:.2f}x "
          f"requests/s; p99 {on['p99_ms']:.1f} ms; served {on['sentences_per_s'] / report['offline_batch32_sentences_per_s']:.0%} of the offline rate")  # fmt: skip
    print(f"concurrency 1: p50 on {runs[(True, 1, 'single')]['p50_ms']:.1f} ms, off {runs[(False, 1, 'single')]['p50_ms']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
