"""The web page in a real browser (Debian's headless Chromium through selenium): text streams in, the temperature
changes the request, a translation shows its n-best list and heat-map, a caption's words show where they looked,
errors are shown in words, the tabs work from the keyboard and the page fits a phone. Saves docs/serve-*.png."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
import httpx2 as httpx
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from served_models import ROOT, free_port, serve, wait_until_up
from shapes import COLOURS, draw

SHOTS = ROOT / "docs"
pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="no chromium and chromedriver here (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def address(served_checkpoints):
    port = free_port()
    models = ["--textgen", served_checkpoints["textgen"], "--translate", served_checkpoints["translation"],
              "--caption", served_checkpoints["captioning"]]  # fmt: skip
    process = serve(*map(str, models), "--port", str(port), "--device", "cpu")
    assert process.stdout is not None and process.stdout.readline().startswith("serving")
    wait_until_up(process, f"http://127.0.0.1:{port}")
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--window-size=1100,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.set_window_size(1100, 900)
    yield driver
    driver.quit()


def wait(browser, condition, seconds=30):
    return WebDriverWait(browser, seconds).until(lambda _: condition())


def opened(browser, address):
    browser.get(address + "/")
    wait(browser, lambda: "Loaded:" in browser.find_element(By.ID, "status").text)
    return browser


def screenshot(browser, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"serve-{name}.png"))
    assert Image.open(SHOTS / f"serve-{name}.png").size[0] >= 1000


def test_text_streams_in_and_the_temperature_changes_the_request(browser, address):
    page = opened(browser, address)
    tabs = [t.text for t in page.find_elements(By.CSS_SELECTOR, "nav button") if t.is_displayed()]
    assert tabs == ["Text generation", "Translation", "Captioning"]
    request = page.find_element(By.ID, "gen-request")
    assert '"temperature":0.7' in request.text
    slider = page.find_element(By.ID, "temperature")
    slider.send_keys(Keys.ARROW_RIGHT * 3)  # as a person moves it from the keyboard: 0.7 -> 1.0
    assert page.find_element(By.ID, "temperature-value").text == "1.0" and '"temperature":1' in request.text
    prompt = page.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("Thou art")
    page.find_element(By.ID, "three").click()
    page.execute_script(  # count each change of the texts: streamed text arrives piece by piece
        "window.pieces = 0; new MutationObserver(() => window.pieces++).observe(document.getElementById('samples'),"
        " {subtree: true, childList: true, characterData: true});"
    )
    page.find_element(By.ID, "generate").click()
    wait(page, lambda: page.find_element(By.ID, "generate").is_enabled() and page.execute_script("return pieces") > 0)
    texts = [s.text for s in page.find_elements(By.CSS_SELECTOR, ".sample .generated")]
    assert len(texts) == 3 and len(set(texts)) == 3 and page.execute_script("return pieces") > 3 * 50
    sent = {"prompt": "Thou art", "method": "sample", "max_len": 300, "temperature": 1.0, "top_p": 1.0, "seed": 2}
    again = httpx.post(address + "/api/generate", json=sent).json()["outputs"][0]
    assert texts[1] == again.strip()  # the page sent the request it shows, with seeds seed, seed + 1, seed + 2
    assert [h.text for h in page.find_elements(By.CSS_SELECTOR, ".sample h2")][0] == "seed 1, temperature 1.0"
    screenshot(page, "textgen")


def test_errors_are_shown_in_words(browser, address):
    page = opened(browser, address)
    length = page.find_element(By.ID, "gen-max-len")
    length.clear()
    length.send_keys("600")  # within the page's field, over the server's bound
    page.find_element(By.ID, "generate").click()
    error = page.find_element(By.ID, "textgen-error")
    wait(page, error.is_displayed)
    assert error.text == "Error: max_len = 600 is over this server's bound of 500"
    page.find_element(By.ID, "tab-translation").click()
    for field, value in (("beam-size", "2"), ("n-best", "3")):
        page.find_element(By.ID, field).clear()
        page.find_element(By.ID, field).send_keys(value)
    page.find_element(By.ID, "translate").click()
    error = page.find_element(By.ID, "translation-error")
    wait(page, error.is_displayed)
    assert error.text.startswith("Error: n_best = 3 is out of range")


def test_a_translation_shows_its_nbest_list_and_heat_map(browser, address):
    page = opened(browser, address)
    page.find_element(By.ID, "tab-textgen").send_keys(Keys.ARROW_RIGHT)  # the tabs work from the keyboard
    assert page.find_element(By.ID, "panel-translation").is_displayed()
    assert page.switch_to.active_element == page.find_element(By.ID, "tab-translation")
    source = page.find_element(By.ID, "source")
    source.clear()
    source.send_keys("a b c d e f")
    page.find_element(By.ID, "translate").click()
    wait(page, lambda: len(page.find_elements(By.CSS_SELECTOR, "#nbest li")) == 3)
    best = page.find_elements(By.CSS_SELECTOR, "#nbest li")
    assert best[0].text.startswith("f e d c b a") and best[0].find_element(By.CLASS_NAME, "score").text
    table = page.find_element(By.CSS_SELECTOR, "#heatmap table")
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")][1:] == [*"abcdef", "</s>"]
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text for r in rows][:6] == [*"fedcba"]
    assert len(rows[0].find_elements(By.TAG_NAME, "td")) == 7
    screenshot(page, "translation")


def write_picture(path: Path) -> Path:
    """A larger drawing of a picture the captioner learned: a red circle on white."""
    draw("circle", COLOURS["red"], size=256).save(path)
    return path


def test_a_caption_shows_where_each_word_looked(browser, address, tmp_path):
    page = opened(browser, address)
    page.find_element(By.ID, "tab-captioning").click()
    page.find_element(By.ID, "picture").send_keys(str(write_picture(tmp_path / "circle.png")))
    wait(page, lambda: len(page.find_elements(By.CSS_SELECTOR, "#caption-words span")) > 1)
    words = page.find_elements(By.CSS_SELECTOR, "#caption-words span")
    assert " ".join(w.text for w in words).startswith("a red circle")
    assert len(page.find_elements(By.CSS_SELECTOR, "#caption-nbest li")) == 3
    ActionChains(page).move_to_element(words[2]).perform()  # hover "circle"
    assert "looking" in words[2].get_attribute("class")
    overlay = page.find_element(By.ID, "overlay")
    assert overlay.is_displayed()
    alpha = page.execute_script(
        "const c = document.getElementById('overlay'); const d = c.getContext('2d').getImageData(0, 0, c.width,"
        " c.height).data; let lo = 255, hi = 0; for (let i = 3; i < d.length; i += 4) { lo = Math.min(lo, d[i]);"
        " hi = Math.max(hi, d[i]); } return [lo, hi];"
    )
    assert alpha[1] - alpha[0] > 50, "the map shades the picture unevenly: where the word looked shows through"
    words[0].send_keys(Keys.TAB)  # focus moves to the next word: its map is shown, as on hover
    assert "looking" in words[1].get_attribute("class")
    screenshot(page, "captioning")


def test_the_page_fits_a_phone_and_fetches_nothing_from_elsewhere(browser, address):
    page = opened(browser, address)
    page.set_window_size(390, 844)
    try:
        for tab in ("tab-textgen", "tab-translation", "tab-captioning"):
            page.find_element(By.ID, tab).click()
            assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        resources = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(address) for r in resources)
    finally:
        page.set_window_size(1100, 900)
