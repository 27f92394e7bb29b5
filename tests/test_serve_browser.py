"""The demo page at ``/`` in headless Chromium (selenium): a served model of each task, used
as a person would (pick a model, type, click, upload a file) and checked against what the
API answers for the same input.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromedriver``); without them
these tests skip, unless ``CI`` is set (``.ci/run`` sets it): then they fail.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.cli_helpers import REPO
from tests.test_forecast import sines, write_series

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 20  # seconds: the longest any page action may take


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {message}")
    pytest.skip(message)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(request) -> dict:
    """The session's tiny trained model of each task (``trained_models`` in conftest.py),
    named apart from its task; trained on one torch thread if this module asks first."""
    require_browser()  # before any training
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = request.getfixturevalue("trained_models")["ckpt"]
    finally:
        torch.set_num_threads(threads)
    names = {"ner": "ner", "sst": "sentiment", "lm": "charlm", "mt": "translate", "fc": "forecast"}
    return {name: ckpt[task] for name, task in names.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """``python -m nlp_lstm mode=serve`` with the five models on a free loopback port: its
    base URL. Stopped with SIGTERM at the end, which must exit 0."""
    port = free_port()
    listing = ", ".join(f"{name}: '{path}'" for name, path in models.items())
    log = tmp_path_factory.mktemp("browser_server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nlp_lstm", "mode=serve", f"serve.port={port}",
             "serve.host=127.0.0.1", "trainer.num_threads=1", f"serve.models={{{listing}}}"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        try:
            if get(f"{base}/health")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert time.monotonic() < deadline, f"the server never became ready: {log.read_text()[-3000:]}"  # fmt: skip
        time.sleep(0.2)
    yield base
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, f"the server exited {code} on SIGTERM: {log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium_profile")  # a fresh one
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1200,800"):  # fmt: skip
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


class Page:
    """The demo page as a person uses it."""

    def __init__(self, driver, base: str) -> None:
        self.driver, self.base = driver, base
        self.wait = WebDriverWait(driver, WAIT)

    def find(self, selector: str):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def find_all(self, selector: str) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def open(self) -> None:
        self.driver.get(self.base + "/")
        self.wait.until(lambda d: self.find("#model").is_enabled())

    def choose(self, model: str) -> None:
        """Pick a model and wait for its example input to be filled in."""
        Select(self.find("#model")).select_by_value(model)
        self.wait.until(lambda d: self.find("#run").is_enabled())

    def type(self, selector: str, text: str) -> None:
        box = self.find(selector)
        box.clear()
        box.send_keys(text)

    def run(self) -> None:
        self.find("#run").click()

    def text_of(self, element) -> str:
        return element.get_attribute("textContent")

    def api(self, model: str, inputs: list, options: dict | None = None) -> list:
        body = {"inputs": inputs, "options": options or {}}
        return post(f"{self.base}/v1/models/{model}/predict", body)["outputs"]


@pytest.fixture
def page(browser, server, tmp_path, request):
    """The page, freshly loaded; a screenshot of it goes to tmp_path at the end."""
    shown = Page(browser, server)
    shown.open()
    yield shown
    browser.save_screenshot(str(tmp_path / f"{request.node.name}.png"))


# ---------------------------------------------------------------------------- the page


def test_the_page_lists_the_models_and_fetches_nothing_elsewhere(page, server):
    options = [o.text for o in Select(page.find("#model")).options]
    assert options == ["ner (ner)", "sst (sentiment)", "lm (charlm)", "mt (translate)", "fc (forecast)"]  # fmt: skip
    for model, task in (("sst", "sentiment"), ("mt", "translate"), ("ner", "ner")):
        page.choose(model)
        assert page.find("#task").text == task
        example = get(f"{server}/v1/models/{model}/example")[1]["input"]
        assert page.find("#text").get_attribute("value") == example
    resources = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(url.startswith(server + "/") for url in resources), resources
    assert page.driver.execute_script("return document.styleSheets.length") == 1  # inline


def test_ner_marks_are_the_entities_the_api_finds(page):
    page.choose("ner")

    def check(text: str) -> list:
        [entities] = page.api("ner", [text])
        page.wait.until(lambda d: page.text_of(page.find("#ner-output")) == text)
        marks = page.find_all("#ner-output mark")
        shown = [(page.text_of(m), m.get_attribute("data-label"),
                  int(m.get_attribute("data-start")), int(m.get_attribute("data-end")))
                 for m in marks]  # fmt: skip
        assert shown == [(e["text"], e["label"], e["start"], e["end"]) for e in entities]
        for mark, entity in zip(marks, entities, strict=True):
            assert text[entity["start"] : entity["end"]] == page.text_of(mark)
            label, _, score = mark.get_attribute("title").partition(" · score ")
            assert label == entity["label"] and float(score) == pytest.approx(entity["score"], abs=6e-4)  # fmt: skip
        colours = {m.get_attribute("data-label"): m.value_of_css_property("background-color") for m in marks}  # fmt: skip
        for mark in marks:  # one colour per label, a different one for each
            assert mark.value_of_css_property("background-color") == colours[mark.get_attribute("data-label")]  # fmt: skip
        assert len(set(colours.values())) == len(colours)
        return entities

    typed = "Mr John Smith said in Paris. The Google Corp deal was new, Zoë said in Rome."
    page.type("#text", typed)
    page.run()
    entities = check(typed)
    assert {e["label"] for e in entities} >= {"PER", "LOC"}, "the toy model finds entities"
    # offsets count code points: an emoji before the entities (set in the box by script, as
    # ChromeDriver types only characters of the Basic Multilingual Plane)
    emoji = "🙂 Mr John Smith said in Paris. 😀 The Google Corp deal was new."
    page.driver.execute_script("document.getElementById('text').value = arguments[0]", emoji)
    page.run()
    assert check(emoji)


def test_sentiment_shows_class_bars_and_words_shaded_by_attention(page):
    page.choose("sst")
    sentence = "the plot was dull but the film is great"
    page.type("#text", sentence)
    page.run()
    page.wait.until(lambda d: len(page.find_all("#sentiment-words .word")) == len(sentence.split()))
    [answer] = page.api("sst", [sentence])
    bars = page.find_all("#sentiment-probs .prob")
    probs = {b.get_attribute("data-label"): float(b.get_attribute("data-p")) for b in bars}
    assert probs == pytest.approx(answer["probs"], abs=1e-6)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert "top" in page.find(f".prob[data-label='{answer['label']}']").get_attribute("class")
    for bar in bars:  # the bar's width is its probability
        track = bar.find_element(By.CLASS_NAME, "track").size["width"]
        width = bar.find_element(By.CLASS_NAME, "bar").size["width"]
        assert width / track == pytest.approx(probs[bar.get_attribute("data-label")], abs=0.01)
    words = page.find_all("#sentiment-words .word")
    assert [page.text_of(w) for w in words] == sentence.split()
    weights = [float(w.get_attribute("data-weight")) for w in words]
    assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    assert weights == pytest.approx([a["weight"] for a in answer["attention"]], abs=1e-6)
    alphas = [float(w.value_of_css_property("background-color").split(",")[-1].rstrip(")"))
              for w in words]  # fmt: skip
    assert alphas.index(max(alphas)) == weights.index(max(weights))  # the most attended, darkest
    assert page.text_of(page.find("#sentiment-words")) == sentence


def test_charlm_text_streams_in_with_the_chosen_sampling(page):
    length = 1500  # characters: a second or so of streaming
    page.choose("lm")
    page.type("#text", "to be")
    for slider, presses, shown in (("#lm-temperature", 4, "0.6"), ("#lm-top-p", 2, "0.85")):
        page.find(slider).send_keys(*[Keys.ARROW_LEFT] * presses)
        assert page.find(f"{slider}-value").text == shown
    page.type("#lm-length", str(length))
    page.type("#lm-seed", "7")
    page.run()
    output = page.find("#lm-output")
    samples = []  # characters shown, read while the stream runs
    deadline = time.monotonic() + 3 * WAIT
    while output.get_attribute("data-state") in ("starting", "streaming"):
        samples.append(len(page.text_of(page.find("#lm-generated"))))
        assert time.monotonic() < deadline, "the stream never ended"
        time.sleep(0.05)
    assert output.get_attribute("data-state") == "done", page.find("#error").text
    growing = [n for n in samples if 0 < n < length]
    assert len(set(growing)) >= 2 and growing == sorted(growing), samples
    generated = page.text_of(page.find("#lm-generated"))
    assert len(generated) == length and page.text_of(page.find("#lm-prompt")) == "to be"
    [answer] = page.api("lm", ["to be"], {"length": length, "temperature": 0.6, "top_p": 0.85, "seed": 7})  # fmt: skip
    assert generated == answer["text"]  # the page sent the sliders' values
    assert page.find("#stop").is_displayed() is False and page.find("#run").is_enabled()


def test_translate_shows_the_translation_and_its_attention_heatmap(page):
    page.choose("mt")
    source = "Ein hund sieht eine kleine katze."
    page.type("#text", source)
    page.type("#mt-beam", "2")
    page.run()
    page.wait.until(lambda d: page.find_all("#mt-heatmap .cell"))
    [answer] = page.api("mt", [source], {"beam_size": 2, "attention": True})
    rows, cols = len(answer["target_tokens"]), len(answer["source_tokens"])
    assert page.find("#mt-text").text == answer["text"]
    cells = page.find_all("#mt-heatmap .cell")
    assert len(cells) == rows * cols and answer["target_tokens"][-1] == "</s>"
    grid = page.find("#mt-heatmap")
    assert (grid.get_attribute("data-rows"), grid.get_attribute("data-cols")) == (str(rows), str(cols))  # fmt: skip
    assert [page.text_of(t) for t in page.find_all("#mt-heatmap .tgt")][-1] == "</s>"
    assert len(page.find_all("#mt-heatmap .src")) == cols
    weights = [float(c.get_attribute("data-weight")) for c in cells]
    assert weights == pytest.approx(flat(answer["attention"]), abs=1e-6)
    assert all(c.size["width"] > 10 and c.size["height"] > 10 for c in cells)  # drawn


def chart_of(page) -> dict:
    """What the forecast chart shows: per column, its history and forecast points."""
    panels = page.find_all("#fc-chart g.panel")
    return {
        p.get_attribute("data-column"): (
            int(p.find_element(By.CSS_SELECTOR, "path.history").get_attribute("data-points")),
            int(p.find_element(By.CSS_SELECTOR, "path.forecast").get_attribute("data-points")),
            len(p.find_elements(By.CSS_SELECTOR, "circle.dot")),
        )
        for p in panels
    }


def shown_forecast(page) -> list[float]:
    """The forecast table's values, row by row."""
    rows = page.find_all("#fc-table tr")[1:]
    return [float(page.text_of(td)) for r in rows for td in r.find_elements(By.TAG_NAME, "td")[1:]]  # fmt: skip


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def test_forecast_chart_from_an_uploaded_csv(page, tmp_path):
    columns = sines(300, seed=1)
    path = write_series(tmp_path / "recent.csv", columns)
    lines = path.read_text().splitlines()  # a column the model never saw, not numbers
    path.write_text("\n".join([lines[0] + ",city"] + [f"{line},Oslo" for line in lines[1:]]) + "\n")  # fmt: skip
    page.choose("fc")
    assert not page.find("#text").is_displayed()
    page.find("#fc-file").send_keys(str(path))
    page.wait.until(lambda d: chart_of(page))
    assert "recent.csv" in page.find("#fc-source").text and not page.find("#error").is_displayed()
    assert chart_of(page) == {"a": (24, 6, 6), "b": (24, 6, 6)}  # look_back rows, horizon steps
    table = {"date": [line.split(",")[0] for line in lines[1:]], **columns}
    [answer] = page.api("fc", [table])
    assert shown_forecast(page) == pytest.approx(flat(answer["values"]), rel=1e-3)
    times = [page.text_of(r.find_element(By.TAG_NAME, "td")) for r in page.find_all("#fc-table tr")[1:]]  # fmt: skip
    assert times == answer["times"]
    for line in page.find_all("#fc-chart path"):
        assert line.size["width"] > 100 and line.size["height"] > 5  # drawn


def test_forecast_chart_from_the_models_own_data(page, server):
    page.choose("fc")
    page.find("#fc-example").click()
    page.wait.until(lambda d: chart_of(page))
    example = get(f"{server}/v1/models/fc/example")[1]["input"]
    [answer] = page.api("fc", [example])
    assert chart_of(page) == {"a": (24, 6, 6), "b": (24, 6, 6)}
    assert shown_forecast(page) == pytest.approx(flat(answer["values"]), rel=1e-3)
    history = page.find("#fc-chart path.history").get_attribute("d")
    assert history.startswith("M") and history.count("L") == 23


def test_errors_show_the_servers_message(page, tmp_path):
    page.choose("lm")
    page.type("#text", "to be~")
    page.run()
    error = page.wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert "never seen in training" in error.text and "'~'" in error.text
    assert page.find("#run").is_enabled()
    page.type("#text", "to be")
    page.type("#lm-length", "20")
    page.run()
    page.wait.until(lambda d: page.find("#lm-output").get_attribute("data-state") == "done")
    assert not page.find("#error").is_displayed()  # cleared by the next run

    short = tmp_path / "short.csv"
    write_series(short, sines(10))
    page.choose("fc")
    page.find("#fc-file").send_keys(str(short))
    page.wait.until(lambda d: page.find("#error").is_displayed())
    assert "look_back=24" in page.find("#error").text


def test_the_sentiment_weights_are_a_distribution(page):
    """Any text: the shading's weights sum to one and cover the words in order."""
    page.choose("sst")
    text = "  a   dull,  dull film ... great  acting though  "
    page.type("#text", text)
    page.run()
    page.wait.until(lambda d: page.find_all("#sentiment-words .word"))
    weights = [float(w.get_attribute("data-weight")) for w in page.find_all("#sentiment-words .word")]  # fmt: skip
    assert math.isclose(sum(weights), 1.0, abs_tol=1e-3)
    assert page.text_of(page.find("#sentiment-words")) == text


def test_inside_view_shades_the_input_by_the_chosen_unit(page, server):
    page.choose("lm")
    page.type("#text", "To be, or")
    page.find("#inside-run").click()
    page.wait.until(
        lambda d: page.find("#inside").is_displayed() and page.find_all("#in-text span")
    )
    spans = page.find_all("#in-text span")
    assert "".join(page.text_of(s) for s in spans) == "To be, or"
    assert Select(page.find("#in-quantity")).first_selected_option.get_attribute("value") == "c"

    def shades() -> list[str]:  # read in one script: the page may re-render meanwhile
        return page.driver.execute_script(
            "return [...document.querySelectorAll('#in-text span')]"
            ".map((s) => getComputedStyle(s).backgroundColor)"
        )

    first = shades()
    page.type("#in-cell", "3")
    page.find("#in-cell").send_keys(Keys.TAB)  # change: the page asks for unit 3
    page.wait.until(lambda d: shades() != first)
    view = post(f"{server}/v1/models/lm/inside", {"input": "To be, or", "cell": 3})
    scale = max(abs(v) for v in view["values"]["c"])
    for shade, value in zip(shades(), view["values"]["c"], strict=True):
        alpha = float(shade.split(",")[-1].rstrip(")")) if shade.count(",") == 3 else 1.0
        assert abs(alpha - min(1.0, abs(value) / scale)) < 0.01, (shade, value)
    ActionChains(page.driver).move_to_element(page.find_all("#in-text span")[1]).perform()
    tip = page.find("#in-tip")
    page.wait.until(lambda d: tip.is_displayed())
    assert "position 1" in tip.text and "forget gate" in tip.text and "cell 3" in tip.text
