"""The web page end to end in headless Chromium (Debian's chromium + chromium-driver, through selenium):
type a prompt, click, see the images; a request the server refuses shows its error on the page."""
from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import torch
from t2i_fixtures import tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no headless browser: install Debian's chromium and chromium-driver (scripts/setup.sh does as root)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from wordcanvas.pipeline import TextToImagePipeline
    from wordcanvas.server.app import Limits, create_app

    torch.set_num_threads(1)
    app = create_app({"squares": TextToImagePipeline.from_pretrained(tiny_run(tmp_path_factory))},
                     limits=Limits(edit_steps=5))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_type_a_prompt_click_and_see_images(server, browser):
    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 1)  # the model list loaded
    browser.find_element(By.ID, "prompt").send_keys("a red square")
    n = browser.find_element(By.ID, "n")
    n.clear()
    n.send_keys("3")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery figure.result img")) == 3)
    images = browser.find_elements(By.CSS_SELECTOR, "#gallery figure.result img")
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
                             for im in images))
    assert [browser.execute_script("return arguments[0].naturalWidth", im) for im in images] == [16, 16, 16]
    captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
    assert all(c.startswith("a red square") for c in captions) and "seed 0" in captions[0]
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_a_refused_request_shows_its_error(server, browser):
    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 1)
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("a very long prompt " * 40)  # 760 characters; the server's limit is 500
    browser.find_element(By.ID, "generate").click()
    error = wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert "422" in error.text and "limit is 500" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#gallery figure.result")
    assert browser.find_element(By.ID, "generate").is_enabled()  # the page recovers for the next try


def open_edit_tab(server, browser, tmp_path):
    """A red 24 px picture on disk, and the page open on its Edit tab."""
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (24, 24), (220, 20, 20)).save(picture)
    browser.get(server + "/")
    browser.find_element(By.ID, "tab-edit").click()
    return picture


def test_edit_tab_uploads_an_image_and_shows_the_result(server, browser, tmp_path):
    pytest.importorskip("wordcanvas.edit")
    picture = open_edit_tab(server, browser, tmp_path)
    wait = WebDriverWait(browser, 60)
    assert browser.find_element(By.ID, "panel-edit").is_displayed()
    assert not browser.find_element(By.ID, "panel-generate").is_displayed()
    browser.find_element(By.ID, "edit-file").send_keys(str(picture))
    browser.find_element(By.ID, "edit-text").send_keys("a blue square")
    browser.find_element(By.ID, "edit-source").send_keys("a red square")
    browser.find_element(By.ID, "edit").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery figure.result img"))
    image = browser.find_element(By.CSS_SELECTOR, "#gallery figure.result img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 16
    assert browser.find_element(By.CSS_SELECTOR, "#gallery figcaption").text.startswith("a blue square")
    # "keep the rest of the picture" with the picture's own caption as the change: the upload comes back
    browser.find_element(By.ID, "edit-text").clear()
    browser.find_element(By.ID, "edit-text").send_keys("a red square")
    browser.find_element(By.ID, "edit-keep").click()
    browser.find_element(By.ID, "edit").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery figure.result img")) == 2)
    newest = browser.find_elements(By.CSS_SELECTOR, "#gallery figure.result img")[0]
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", newest))
    colours = browser.execute_script("""
        const img = arguments[0], canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data, seen = new Set();
        for (let i = 0; i < data.length; i += 4) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
        return [...seen];""", newest)
    assert colours == ["220,20,20"]


def test_edit_tab_offers_automatic_strength(server, browser, tmp_path):
    pytest.importorskip("wordcanvas.edit")
    from selenium.webdriver.support.ui import Select

    picture = open_edit_tab(server, browser, tmp_path)
    wait = WebDriverWait(browser, 120)
    # record what the page sends, then let the request through unchanged
    browser.execute_script("""
        window.sentStrengths = [];
        const realFetch = window.fetch;
        window.fetch = (url, options) => {
          if (options && options.body instanceof FormData) window.sentStrengths.push(options.body.get("strength"));
          return realFetch(url, options);
        };""")
    keep = browser.find_element(By.ID, "edit-keep")
    keep.click()
    Select(browser.find_element(By.ID, "edit-strength")).select_by_value("auto")
    assert not keep.is_selected() and not keep.is_enabled()  # auto picks the local blend itself
    browser.find_element(By.ID, "edit-file").send_keys(str(picture))
    browser.find_element(By.ID, "edit-text").send_keys("a blue square")
    browser.find_element(By.ID, "edit-source").send_keys("a red square")
    browser.find_element(By.ID, "edit").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery figure.result img")
               or d.find_element(By.ID, "error").text)
    assert not browser.find_element(By.ID, "error").text
    image = browser.find_element(By.CSS_SELECTOR, "#gallery figure.result img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 16
    assert browser.execute_script("return window.sentStrengths") == ["auto"]
    Select(browser.find_element(By.ID, "edit-strength")).select_by_value("1.5")
    assert keep.is_enabled()
