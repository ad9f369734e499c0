"""Drives the staff console in a real Chromium through WebDriver (chromedriver).

Run by tests/it/browser.rs, which starts `som serve`'s app over a fresh database, seeds it,
runs this script, and then checks through the library what the browser did. Arguments:
BASE_URL ORDER_ID SCREENSHOT_DIR HELD_ORDER_ID. Staff `boss` and customer `carol` both have the
password "correct horse battery"; carol's paid order ORDER_ID has an item named
<script>alert(1)</script>; her order HELD_ORDER_ID is authorised (manual capture), 25.50 held. Exits non-zero (with the reason) on the first thing that is not
as a user of the console expects.
"""

import http.server
import os
import sys
import threading
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE, ORDER, SHOTS, HELD = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script>"
DESKTOP, PHONE = (1280, 1000), (390, 844)


def browser(javascript=True):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("SOM_TEST_CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions"):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=os.environ.get("SOM_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(*DESKTOP)
    return driver


STARTED = time.monotonic()


def step(name):
    """Reports progress (shown when the test fails)."""
    print(f"{time.monotonic() - STARTED:6.1f}s {name}", flush=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def wait_for(driver, css):
    return WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def text_of(driver, css):
    """The text of the first element matching `css`, "" while there is none (or the page is
    being replaced)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def heading(driver):
    WebDriverWait(driver, 10).until(lambda d: text_of(d, "main h1") != "")
    return text_of(driver, "main h1")


def flash(driver):
    return text_of(driver, "main .flash")


def sign_in(driver, username, expect_heading):
    driver.get(BASE + "/console/")
    check(heading(driver) == "Sign in", "the console sends a stranger to sign in")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: heading(d) == expect_heading)


def confirm(driver):
    """Accepts the confirm dialog the console's script shows before an action."""
    WebDriverWait(driver, 5).until(EC.alert_is_present())
    driver.switch_to.alert.accept()


def no_alert(driver):
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def shoot(driver, name):
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(*size)
        # The page must not be wider than the screen (tables scroll inside their box).
        width = driver.execute_script("return document.documentElement.scrollWidth")
        if width > size[0] + 1:
            wide = driver.execute_script(
                "return Array.from(document.querySelectorAll('main *')).filter(function (e) {"
                " var p = e.parentElement; return !(p && p.closest('.scroll')) && e.getBoundingClientRect().right > window.innerWidth + 1; }).slice(0, 5)"
                ".map(function (e) { return e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right); })")
            raise AssertionError(f"{name} at {label} width is {width}px wide: {wide}")
        driver.save_screenshot(os.path.join(SHOTS, f"{name}-{label}.png"))
    driver.set_window_size(*DESKTOP)


def refund(driver, amount, reason, javascript):
    amount_field = driver.find_element(By.CSS_SELECTOR, "input[name=amount]")
    amount_field.clear()
    amount_field.send_keys(amount)
    driver.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys(reason)
    driver.find_element(By.CSS_SELECTOR, "form[action$='/refund'] button[type=submit]").click()
    if javascript:
        confirm(driver)
    WebDriverWait(driver, 10).until(lambda d: "Refund #" in flash(d))


def find_order_by_search(driver, text):
    driver.find_element(By.LINK_TEXT, "Orders").click()
    wait_for(driver, "#q").send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "q=" in d.current_url)
    driver.find_element(By.LINK_TEXT, "#" + ORDER).click()
    WebDriverWait(driver, 10).until(lambda d: heading(d) == "Order #" + ORDER)


def attacker_page(target):
    """A page on another site that posts a refund form to the console when opened."""
    page = f"""<!doctype html><form id=f method=post action="{target}">
<input name=payment_id value=1><input name=amount value=7.00><input name=reason value=forged>
<input name=idempotency_key value=forged-1></form><script>document.getElementById('f').submit()</script>"""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # "localhost" is another site than "127.0.0.1": the console's SameSite=Strict cookie stays home.
    return server, f"http://localhost:{server.server_port}/"


def main():
    os.makedirs(SHOTS, exist_ok=True)
    driver = browser()
    try:
        step('A customer is turned away.')
        # A customer is turned away.
        sign_in(driver, "carol", "Staff only")

        step('Staff: overview')
        # Staff: overview, then the order found by searching the customer's name.
        driver.delete_all_cookies()
        sign_in(driver, "boss", "Overview")
        shoot(driver, "overview")
        find_order_by_search(driver, "carol")
        names = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td.name")]
        check(XSS in names, f"the item name shows as text: {names}")
        check(no_alert(driver), "no script from an item name ran")

        step('A partial refund')
        # A partial refund, confirmed in the dialog; then the order and its timeline show it.
        refund(driver, "2.50", "scratched on arrival", javascript=True)
        check(driver.find_element(By.CSS_SELECTOR, "p.status .badge").text == "PARTIALLY_REFUNDED",
              "the order is partially refunded")
        timeline = driver.find_element(By.CSS_SELECTOR, "ol.timeline").text
        check("Refund #1 of 2.50 USD requested" in timeline and "scratched on arrival" in timeline,
              f"the refund is in the timeline: {timeline}")
        check("PAID → PARTIALLY_REFUNDED" in timeline, "the status change is in the timeline")
        shoot(driver, "order")

        step('Ship the order and take a return')
        # The paid order is packed into one parcel, shipped with tracking and delivered; one of
        # its items comes back: the return is asked for, approved, received and refunded.
        driver.find_element(By.CSS_SELECTOR, "form[action$='/fulfil'] button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "ready to ship" in flash(d))
        driver.find_element(By.CSS_SELECTOR, "form[action$='/ship'] input[name=carrier]").send_keys("UPS")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/ship'] input[name=tracking_number]").send_keys("1Z999")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/ship'] button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "SHIPPED" in flash(d))
        check("UPS 1Z999" in driver.find_element(By.CSS_SELECTOR, "#fulfilment table").text, "the tracking is shown")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/deliver'] button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "DELIVERED" in flash(d))
        badges = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "p.status .badge")]
        check(badges == ["PARTIALLY_REFUNDED", "DELIVERED"], f"money and goods side by side: {badges}")
        quantity = driver.find_element(By.CSS_SELECTOR, "form[action$='/returns'] input[type=number]")
        quantity.clear()
        quantity.send_keys("1")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/returns'] input[name=reason]").send_keys("arrived broken")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/returns'] button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "REQUESTED" in flash(d))
        driver.find_element(By.CSS_SELECTOR, "form[action$='/approve'] button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "APPROVED" in flash(d))
        driver.find_element(By.CSS_SELECTOR, "form[action$='/receive'] button[type=submit]").click()
        confirm(driver)
        WebDriverWait(driver, 10).until(lambda d: "REFUNDED" in flash(d))
        check("refund of 10.00 USD" in flash(driver), f"the return is refunded: {flash(driver)}")
        badges = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "p.status .badge")]
        check(badges == ["PARTIALLY_REFUNDED", "PARTIALLY_RETURNED"], f"the order shows the return: {badges}")
        shoot(driver, "order-returned")

        step('Capture part of an authorised order')
        # The held order offers Capture and Void; 10.00 of it is captured, the rest released.
        driver.get(BASE + "/console/orders/" + HELD)
        check(driver.find_element(By.CSS_SELECTOR, "p.status .badge").text == "AUTHORIZED",
              "the held order is authorised")
        amount_field = driver.find_element(By.CSS_SELECTOR, "form[action$='/capture'] input[name=amount]")
        amount_field.send_keys("10.00")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/capture'] button[type=submit]").click()
        confirm(driver)
        WebDriverWait(driver, 10).until(lambda d: "captured" in flash(d))
        check("captured 10.00 USD of 25.50 USD" in flash(driver), f"the capture is confirmed: {flash(driver)}")
        check(driver.find_element(By.CSS_SELECTOR, "p.status .badge").text == "PAID", "the held order is paid")
        check(not driver.find_elements(By.CSS_SELECTOR, "form[action$='/capture']"), "nothing is left to capture")
        shoot(driver, "order-captured")

        step('A forged form')
        # A forged form without the CSRF token, posted from the page itself: refused.
        driver.execute_script(
            "var f = document.createElement('form'); f.method = 'post';"
            "f.action = '/console/orders/" + ORDER + "/refund';"
            "[['payment_id','1'],['amount','5.00'],['reason','forged'],['idempotency_key','forged-0']]"
            ".forEach(function (p) { var i = document.createElement('input'); i.name = p[0]; i.value = p[1];"
            " f.appendChild(i); });"
            "document.body.appendChild(f); HTMLFormElement.prototype.submit.call(f);")
        WebDriverWait(driver, 10).until(lambda d: heading(d) == "Form expired")

        step('The same form from another site')
        # The same form from another site: the session cookie is not even sent.
        server, url = attacker_page(BASE + "/console/orders/" + ORDER + "/refund")
        try:
            driver.get(url)
            WebDriverWait(driver, 10).until(lambda d: d.current_url.startswith(BASE))
            check(heading(driver) in ("Signed out", "Refused", "Form expired"),
                  f"a cross-site post is refused: {heading(driver)}")
        finally:
            server.shutdown()

        step('Disable the customer')
        # Disable the customer from their page.
        driver.get(BASE + "/console/orders/" + ORDER)
        driver.find_element(By.CSS_SELECTOR, "dl.facts a[href^='/console/users/']").click()
        WebDriverWait(driver, 10).until(lambda d: heading(d) == "carol")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/active'] button").click()
        confirm(driver)
        WebDriverWait(driver, 10).until(lambda d: "disabled" in flash(d))

        step('Sign out:')
        # Sign out: back to the sign-in page, and the console is closed again.
        driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
        WebDriverWait(driver, 10).until(lambda d: heading(d) == "Sign in")
        check("Signed out" in flash(driver), "signing out says so")
        driver.get(BASE + "/console/orders")
        check(heading(driver) == "Sign in", "after signing out the console asks to sign in")
    finally:
        driver.quit()

    step('Without JavaScript')
    # Without JavaScript everything still works (no confirm dialogs, plain form posts).
    driver = browser(javascript=False)
    try:
        sign_in(driver, "boss", "Overview")
        check(driver.execute_script("return 1") == 1, "WebDriver still runs its own script")
        find_order_by_search(driver, ORDER)
        refund(driver, "1.00", "goodwill, no script", javascript=False)
        check(no_alert(driver), "no dialog without JavaScript")
        driver.find_element(By.LINK_TEXT, "Notifications").click()
        WebDriverWait(driver, 10).until(lambda d: heading(d) == "Notifications")
        driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
        WebDriverWait(driver, 10).until(lambda d: heading(d) == "Sign in")
    finally:
        driver.quit()
    print("console browser checks passed")


if __name__ == "__main__":
    main()
