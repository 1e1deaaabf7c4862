"""Drives the chat page that `ferrolm serve` serves at `/` in headless Chromium.

Needs Debian's chromium + chromedriver (`apt-get install -y chromium chromium-driver`) and selenium
(`pip install selenium==4.51.0`). Without them the browser tests are skipped, unless the environment
variable CI is set, in which case they fail.

Environment:
  FERROLM_BIN          server binary (default: <repo>/target/release/ferrolm); started as
                       `$FERROLM_BIN serve --port 0 --threads 2 $FERROLM_SERVE_ARGS`, stopped with SIGTERM
  FERROLM_SERVE_ARGS   extra arguments for `serve`, e.g. "--model /path/model.gguf"
  FERROLM_TEST_URL     use an already running server instead of starting one (e.g. http://127.0.0.1:8080);
                       FERROLM_TEST_KEY_URL + FERROLM_TEST_API_KEY do the same for the API-key test
  FERROLM_TEST_START_TIMEOUT  seconds to wait for "listening on http://" (default 600: the first start
                       may download the default model)
  CHROMIUM_BIN, CHROMEDRIVER  default /usr/bin/chromium, /usr/bin/chromedriver
  FERROLM_TEST_SCREENSHOTS    a directory: PNG screenshots of the page are written there

Run: python -m pytest -v tools/server_tests/test_chat_page.py
"""

import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # reported by the `driver` fixture
    webdriver = None

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
START_TIMEOUT = float(os.environ.get("FERROLM_TEST_START_TIMEOUT", "600"))
REPLY_TIMEOUT = 180  # seconds for a whole short reply on a slow 2-thread CPU run


def unavailable(reason):
    """Skip, or fail when CI is set (CI must not silently skip the browser test)."""
    if IN_CI:
        pytest.fail(f"{reason} (the CI environment variable is set, so this fails instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------
# server

class Server:
    def __init__(self, extra_args=()):
        binary = Path(os.environ.get("FERROLM_BIN", REPO / "target" / "release" / "ferrolm"))
        if not binary.is_file():
            unavailable(f"ferrolm binary not found at {binary} (cargo build --release, or set FERROLM_BIN "
                        "or FERROLM_TEST_URL)")
        self.stderr = tempfile.TemporaryFile(mode="w+b")
        cmd = [str(binary), "serve", "--port", "0", "--threads", "2",
               *shlex.split(os.environ.get("FERROLM_SERVE_ARGS", "")), *extra_args]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.lines = queue.Queue()
        # Keep draining stdout for the server's whole life so that it can never block on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_for_url()

    def _drain(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))
        self.lines.put(None)

    def stderr_tail(self, n=3000):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-n:]

    def _wait_for_url(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                pytest.fail(f"{shlex.join(self.cmd)} printed no 'listening on http://' line within "
                            f"{START_TIMEOUT:.0f} s; stderr:\n{self.stderr_tail()}", pytrace=False)
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                pytest.fail(f"{shlex.join(self.cmd)} exited with {code} before listening; stderr:\n"
                            f"{self.stderr_tail()}", pytrace=False)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                return m.group(1).rstrip("/")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def server_url():
    url = os.environ.get("FERROLM_TEST_URL")
    if url:
        yield url.rstrip("/")
        return
    server = Server()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_server():
    """(url, key) of a server started with --api-key."""
    url = os.environ.get("FERROLM_TEST_KEY_URL")
    if url:
        key = os.environ.get("FERROLM_TEST_API_KEY")
        if not key:
            pytest.fail("FERROLM_TEST_KEY_URL needs FERROLM_TEST_API_KEY", pytrace=False)
        yield url.rstrip("/"), key
        return
    if os.environ.get("FERROLM_TEST_URL"):
        pytest.skip("FERROLM_TEST_URL is set but FERROLM_TEST_KEY_URL is not")
    key = "test-" + secrets.token_hex(8)
    server = Server(["--api-key", key])
    try:
        yield server.url, key
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# browser

@pytest.fixture(scope="module")
def driver():
    if webdriver is None:
        unavailable("selenium is not installed (pip install selenium==4.51.0)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            unavailable(f"{path} not found: install it with `apt-get install -y {package}`")
    profile = tempfile.mkdtemp(prefix="ferrolm-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    # An explicit driver path: Selenium Manager (which would go to the network) is never run.
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def js(drv, script, *args):
    return drv.execute_script(script, *args)


def wait(drv, cond, timeout, message):
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.05).until(lambda d: cond())
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for: {message}\npage state: {page_state(drv)}",
                    pytrace=False)


def page_state(drv):
    return js(drv, """
        const turns = [...document.querySelectorAll('#messages .turn')];
        return {status: document.getElementById('status').textContent,
                model: document.getElementById('model').textContent,
                busy: document.body.dataset.busy,
                turns: turns.map(t => ({cls: t.className, finish: t.dataset.finish || null,
                                        text: t.textContent.slice(0, 300)}))};""")


def open_page(drv, url):
    drv.get(url + "/")
    wait(drv, lambda: js(drv, "return document.body.dataset.ready === '1'"), 30,
         "the page to read the model id from GET /v1/models")
    assert drv.find_element(By.ID, "model").text.strip()


def set_field(drv, element_id, value):
    el = drv.find_element(By.ID, element_id)
    if not el.is_displayed():
        drv.find_element(By.ID, "settings-toggle").click()
    el.clear()
    el.send_keys(str(value))


def assistant_count(drv):
    return js(drv, "return document.querySelectorAll('#messages .msg.assistant').length")


def last_assistant_text(drv):
    return js(drv, """const a = document.querySelectorAll('#messages .msg.assistant');
                      return a.length ? a[a.length - 1].textContent : null;""")


def is_busy(drv):
    return js(drv, "return document.body.dataset.busy === '1'")


def last_turn(drv):
    return js(drv, """const t = [...document.querySelectorAll('#messages .turn.assistant')].pop();
                      const meta = t.querySelector('.meta'), err = t.querySelector('.error-line');
                      return {finish: t.dataset.finish, chunks: Number(t.dataset.chunks),
                              completionTokens: t.dataset.completionTokens === undefined ? null
                                                : Number(t.dataset.completionTokens),
                              meta: meta ? meta.textContent : null, error: err ? err.textContent : null};""")


def send_message(drv, text):
    before = assistant_count(drv)
    box = drv.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    drv.find_element(By.ID, "send").click()
    wait(drv, lambda: assistant_count(drv) == before + 1, 10, "a new assistant message element")


def wait_until_idle(drv, timeout=REPLY_TIMEOUT):
    wait(drv, lambda: not is_busy(drv), timeout, "the reply to finish")


def screenshot(drv, name):
    folder = os.environ.get("FERROLM_TEST_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        drv.save_screenshot(os.path.join(folder, name))


# Records the length of the last assistant message at every DOM change under #messages. Each network
# read that delivers content is its own task, so a streamed reply leaves several distinct lengths.
RECORD_GROWTH = """
    window.__growth = [];
    const m = document.getElementById('messages');
    new MutationObserver(() => {
        const a = m.querySelectorAll('.msg.assistant');
        const n = a.length ? a[a.length - 1].textContent.length : 0;
        const g = window.__growth;
        if (n && (!g.length || g[g.length - 1][1] !== n)) g.push([performance.now(), n]);
    }).observe(m, {subtree: true, childList: true, characterData: true});
"""


# ---------------------------------------------------------------------------------------------------
# tests

def test_page_is_self_contained(server_url):
    with urllib.request.urlopen(server_url + "/", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/html"
        html = resp.read().decode("utf-8")
    for element_id in ("input", "send", "stop", "messages", "temperature", "max-tokens"):
        assert f'id="{element_id}"' in html, element_id
    external = re.findall(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""",
                          html, re.I)
    assert not external, f"the page must load nothing from other origins: {external}"


def test_reply_streams_and_shows_usage(server_url, driver):
    open_page(driver, server_url)
    set_field(driver, "max-tokens", 24)
    set_field(driver, "temperature", 0)
    js(driver, RECORD_GROWTH)
    send_message(driver, "Write one sentence about the sea.")

    wait(driver, lambda: (last_assistant_text(driver) or "").strip(), REPLY_TIMEOUT,
         "the assistant message to get some text")
    wait_until_idle(driver)

    text = last_assistant_text(driver)
    turn = last_turn(driver)
    assert turn["error"] is None, turn
    assert turn["finish"] in ("stop", "length"), turn
    assert turn["completionTokens"] is not None, f"no usage chunk reached the page: {turn}"
    assert 1 <= turn["completionTokens"] <= 24, turn
    assert "prompt" in turn["meta"] and "token" in turn["meta"], turn
    if turn["completionTokens"] > 2:
        assert "tok/s" in turn["meta"], turn

    growth = js(driver, "return window.__growth")
    lengths = [n for _, n in growth]
    assert len(lengths) >= 2, f"the reply did not appear incrementally (lengths seen: {lengths})"
    assert lengths == sorted(lengths) and lengths[-1] == len(text), (lengths, text)
    assert driver.find_element(By.ID, "stop").get_attribute("disabled") is not None
    screenshot(driver, "chat_reply.png")


def test_stop_ends_a_long_reply(server_url, driver):
    open_page(driver, server_url)
    set_field(driver, "max-tokens", 400)
    set_field(driver, "temperature", 0)
    send_message(driver, "Count from 1 to 1000 in words, separated by commas.")

    wait(driver, lambda: (last_assistant_text(driver) or "").strip(), REPLY_TIMEOUT,
         "the long reply to start")
    first = last_assistant_text(driver)
    wait(driver, lambda: len(last_assistant_text(driver)) > len(first) or not is_busy(driver), 60,
         "the long reply to grow")
    second = last_assistant_text(driver)
    assert is_busy(driver), f"the 400-token reply finished before Stop could be pressed: {last_turn(driver)}"
    assert len(second) > len(first) and second.startswith(first), (first, second)

    clicked = time.monotonic()
    driver.find_element(By.ID, "stop").click()
    wait_until_idle(driver, timeout=10)
    stopped_after = time.monotonic() - clicked
    at_stop = last_assistant_text(driver)
    time.sleep(1.0)
    assert last_assistant_text(driver) == at_stop, "text kept arriving after Stop"
    turn = last_turn(driver)
    assert turn["finish"] == "stopped", turn
    assert 0 < turn["chunks"] < 400, turn
    assert turn["error"] is None, turn
    assert "stopped" in turn["meta"], turn
    assert stopped_after < 5, f"Stop took {stopped_after:.1f} s"
    assert driver.find_element(By.ID, "stop").get_attribute("disabled") is not None
    assert driver.find_element(By.ID, "send").get_attribute("disabled") is None
    screenshot(driver, "chat_stopped.png")

    # The server is still fine, and the conversation goes on from the partial reply.
    set_field(driver, "max-tokens", 8)
    send_message(driver, "Thanks, that is enough.")
    wait_until_idle(driver)
    turn = last_turn(driver)
    assert turn["finish"] in ("stop", "length") and turn["error"] is None, turn
    assert assistant_count(driver) == 2

    driver.find_element(By.ID, "new-chat").click()
    assert js(driver, "return document.querySelectorAll('#messages .msg').length") == 0


def test_enter_sends_and_shift_enter_adds_a_line(server_url, driver):
    open_page(driver, server_url)
    set_field(driver, "max-tokens", 4)
    box = driver.find_element(By.ID, "input")
    box.send_keys("Hello")
    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("there")
    assert box.get_attribute("value") == "Hello\nthere"
    assert assistant_count(driver) == 0
    box.send_keys(Keys.ENTER)
    wait(driver, lambda: assistant_count(driver) == 1, 10, "Enter to send the message")
    assert js(driver, "return document.querySelector('#messages .msg.user').textContent") == "Hello\nthere"
    wait_until_idle(driver)
    assert last_turn(driver)["error"] is None


def test_api_key_prompt(keyed_server, driver):
    url, key = keyed_server
    driver.get(url + "/")
    wait(driver, lambda: "API key" in driver.find_element(By.ID, "status").text, 30,
         "the page to ask for an API key after a 401 from /v1/models")
    key_box = driver.find_element(By.ID, "api-key")
    assert key_box.is_displayed()
    key_box.send_keys(key, Keys.TAB)
    wait(driver, lambda: js(driver, "return document.body.dataset.ready === '1'"), 30,
         "the model id once the key is entered")
    set_field(driver, "max-tokens", 4)
    send_message(driver, "Hi")
    wait_until_idle(driver)
    assert last_turn(driver)["error"] is None, last_turn(driver)

    driver.get(url + "/")  # the key was kept in localStorage
    wait(driver, lambda: js(driver, "return document.body.dataset.ready === '1'"), 30,
         "the page to reuse the stored key")
    js(driver, "localStorage.clear()")
