"""The dashboard as a user drives it in a real browser: Debian's chromium through its
chromedriver (Selenium with an explicit Service path, so nothing is downloaded).

Run by test_dashboard.py inside the sandbox's laptop network namespace:
``python dashboard_browser.py URL EMAIL PASSWORD APP ROUTER ARTEFACTS``. Each step waits
for what the user would see, saves a screenshot, and prints ``ok <step>``; a step that
does not see it fails with the page's text.
"""

from __future__ import annotations

import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

# A page read while the browser loads the next one.
LOADING = (StaleElementReferenceException, NoSuchElementException)


def browser(profile: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                # The dashboard's certificate is from dynod's local CA; the test checks
                # it with curl --cacert, chromium would need an NSS database for it.
                "--ignore-certificate-errors", f"--user-data-dir={profile}",
                "--window-size=1280,900", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options,
                            service=Service(executable_path="/usr/bin/chromedriver"))


def main(argv: list[str]) -> int:
    url, email, password, app, router, out = argv
    artefacts = Path(out)
    artefacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            run(driver, url=url, email=email, password=password, app=app, router=router,
                artefacts=artefacts)
        finally:
            driver.quit()
    return 0


def run(driver: WebDriver, *, url: str, email: str, password: str, app: str, router: str,
        artefacts: Path) -> None:
    def text() -> str:
        return str(driver.find_element(By.TAG_NAME, "body").text)

    def see(step: str, check: str, timeout: float = 90.0, reload: bool = False) -> None:
        def seen(_d: object) -> bool:
            if reload:
                driver.refresh()
            return check in text()
        try:
            WebDriverWait(driver, timeout, poll_frequency=2.0 if reload else 0.5,
                          ignored_exceptions=LOADING).until(seen)
        except TimeoutException:
            driver.save_screenshot(str(artefacts / f"{step}-failed.png"))
            raise AssertionError(f"{step}: {check!r} not on the page:\n{text()}") from None
        driver.save_screenshot(str(artefacts / f"{step}.png"))
        print("ok", step, flush=True)

    def sign_in(secret: str) -> None:
        driver.find_element(By.NAME, "email").clear()
        driver.find_element(By.NAME, "email").send_keys(email)
        driver.find_element(By.NAME, "password").send_keys(secret)
        driver.find_element(By.CSS_SELECTOR, "#signin button").click()

    driver.get(url)  # not signed in: the sign-in page
    see("signin", "Sign in to dynod")
    sign_in("not-the-password")
    see("wrong-password", f"wrong email or password for {email}")
    sign_in(password)
    see("apps", "Your apps")
    assert app in driver.find_element(By.ID, "apps").text, text()

    driver.find_element(By.LINK_TEXT, app).click()
    see("dynos", "Formation")
    quantity = driver.find_element(By.ID, "quantity-web")
    quantity.clear()
    quantity.send_keys("2")
    driver.find_element(By.ID, "scale-web").click()
    see("scaled", "Done: scaled")

    def both_up(_d: object) -> bool:
        driver.refresh()
        states = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#dynos td.state-up")]
        return len(states) == 2
    try:
        WebDriverWait(driver, 120, poll_frequency=2.0,
                      ignored_exceptions=LOADING).until(both_up)
    except TimeoutException:
        raise AssertionError(f"web.1 and web.2 not both up:\n{text()}") from None
    assert "web.2" in driver.find_element(By.ID, "dynos").text, text()
    driver.save_screenshot(str(artefacts / "dynos-two-up.png"))
    print("ok two-dynos-up", flush=True)

    driver.find_element(By.ID, "tab-releases").click()
    see("releases", "Releases")
    rows = driver.find_elements(By.CSS_SELECTOR, "#releases tr[id^=release-v]")
    current = int(str(rows[0].get_attribute("id")).removeprefix("release-v"))
    target = current - 1
    driver.find_element(By.ID, f"rollback-v{target}").click()
    see("rolled-back", f"Rollback to v{target}")
    assert f"v{current + 1} (current)" in text(), text()
    assert f"Rollback to v{target}" in driver.find_element(By.ID, f"release-v{current + 1}").text

    driver.find_element(By.ID, "tab-config").click()
    see("config", "Config vars")
    driver.find_element(By.ID, "tab-domains").click()
    see("domains", "Domains")
    driver.find_element(By.ID, "tab-addons").click()
    see("addons", "Add-ons")

    driver.find_element(By.ID, "tab-logs").click()
    see("logs", f"by user {email}")  # the backlog: app[api] lines naming the user
    probe = f"/dashboard-probe-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(f"http://{router}{probe}",
                                     headers={"Host": f"{app}.dynod.localhost"})
    try:  # any answer of the app's (its 404 for this path too) gets a router line
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 (the router)
            reply.read()
    except urllib.error.HTTPError as exc:
        print("probe answered", exc.code, flush=True)
    see("logs-router-line", f'path="{probe}"')
    assert "dynod[router]" in driver.find_element(By.ID, "log").text, text()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
