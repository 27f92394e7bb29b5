"""Screenshots of the demo page (``GET /`` of ``python -m nlp_lstm mode=serve``), one per view.

    python scripts/demo_screenshots.py --models ner=runs/ner/.../best.pt sst=... lm=... \\
        mt=... fc=... --out docs/images

Starts the server with the given checkpoints on a free loopback port, drives the page in
headless Chromium (Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, through
selenium) as a person would, and writes ``demo_<task>.png`` (ner, sentiment, charlm,
translate, forecast) for the first model of each task, in a 1200 × 800 viewport. Each view
runs on the model's example input (``GET /v1/models/{name}/example``) unless ``--text
TASK=TEXT`` gives another (NER has one naming all four CoNLL types by default); a
forecaster whose training file is not on this machine reads ``--forecast-csv`` instead
(uploaded through the page's file input).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TEXTS = {
    "ner": "EU rejects German call to boycott British lamb. Peter Blackburn visited Berlin on "
    "Monday, and the European Commission said it disagreed.",
}
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def start_server(models: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    listing = ", ".join(f"{name}: '{Path(path).resolve()}'" for name, path in models.items())
    command = [sys.executable, "-m", "nlp_lstm", "mode=serve", f"serve.port={port}",
               "serve.host=127.0.0.1", "trainer.num_threads=1", f"serve.models={{{listing}}}"]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                if reply.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server never became ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def browser(width: int, height: int, profile: Path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))  # fmt: skip
    # the window holds the viewport and the browser's frame: size it so that the viewport
    # (what a screenshot shows) is width × height
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    return driver


def shoot(driver, base: str, model: dict, out: Path, text: str | None, forecast_csv: str | None) -> Path:  # fmt: skip
    """Drive one view on the model's example and save its screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 120)
    find = driver.find_element
    driver.get(base + "/")
    wait.until(lambda d: find(By.ID, "model").is_enabled())
    Select(find(By.ID, "model")).select_by_value(model["name"])
    wait.until(lambda d: find(By.ID, "run").is_enabled())
    task = model["task"]

    def set_value(element_id: str, value: str) -> None:
        box = find(By.ID, element_id)
        box.clear()
        box.send_keys(value)

    if text is not None and task != "forecast":
        set_value("text", text)
    if task == "charlm":
        for slider, value in (("lm-temperature", "0.7"), ("lm-top-p", "0.9")):
            driver.execute_script(  # as a drag would: set the value, fire "input"
                "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
                "s.dispatchEvent(new Event('input'));", slider, value)  # fmt: skip
        set_value("lm-length", "500")
        set_value("lm-seed", "3")
    if task == "forecast" and find(By.ID, "fc-example").is_enabled():
        find(By.ID, "fc-example").click()
    elif task == "forecast":
        if not forecast_csv:
            raise SystemExit(f"{model['name']}: its training file is not here: give --forecast-csv")
        find(By.ID, "fc-file").send_keys(str(Path(forecast_csv).resolve()))
    else:
        find(By.ID, "run").click()

    done = {
        "ner": lambda d: d.find_elements(By.CSS_SELECTOR, "#ner-output mark, #ner-legend span"),
        "sentiment": lambda d: d.find_elements(By.CSS_SELECTOR, "#sentiment-words .word"),
        "charlm": lambda d: find(By.ID, "lm-output").get_attribute("data-state") == "done",
        "translate": lambda d: d.find_elements(By.CSS_SELECTOR, "#mt-heatmap .cell"),
        "forecast": lambda d: d.find_elements(By.CSS_SELECTOR, "#fc-chart g.panel"),
    }[task]
    wait.until(lambda d: done(d) or find(By.ID, "error").is_displayed())
    if find(By.ID, "error").is_displayed():
        raise SystemExit(f"{model['name']}: the page shows an error: {find(By.ID, 'error').text}")
    if task == "charlm":  # the start of the sample, as it streamed in
        driver.execute_script("document.getElementById('lm-output').scrollTop = 0")
    time.sleep(0.3)  # let the last frame paint
    path = out / f"demo_{task}.png"
    driver.save_screenshot(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                        help="the checkpoints to serve, each named")  # fmt: skip
    parser.add_argument("--out", default="docs/images", help="folder for demo_<task>.png")
    parser.add_argument("--forecast-csv", help="a series to upload when the forecaster's own training file is missing")  # fmt: skip
    parser.add_argument("--text", nargs="*", default=[], metavar="TASK=TEXT",
                        help="the input of a view instead of the model's example")  # fmt: skip
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.models)
    texts = {**TEXTS, **dict(item.split("=", 1) for item in args.text)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scratch = tempfile.TemporaryDirectory(prefix="demo-screenshots-")
    log = Path(scratch.name) / "server.log"
    port = free_port()
    process = start_server(models, port, log)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        listed = get_json(f"{base}/v1/models")["models"]
        first = {}
        for model in listed:
            first.setdefault(model["task"], model)
        driver = browser(args.width, args.height, Path(scratch.name) / "profile")
        for model in first.values():
            text = texts.get(model["task"])
            print(shoot(driver, base, model, out, text, args.forecast_csv), flush=True)
    finally:
        if driver is not None:
            driver.quit()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        if code != 0:
            print(f"the server exited {code}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        scratch.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    main()
