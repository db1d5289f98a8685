"""The console watcher that fails tests on CSP violations does notice one."""
from playwright.sync_api import expect


def test_an_inline_script_is_reported_as_a_csp_violation(page, live_server, browser_log):
    def add_inline_script(route):
        response = route.fetch()
        body = response.text().replace("</body>", "<script>window.pwned = 1</script></body>")
        route.fulfill(response=response, body=body)

    page.route("**/login", add_inline_script)
    page.goto(live_server("/login"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    for _ in range(100):
        if browser_log.csp_violations:
            break
        page.wait_for_timeout(20)
    assert browser_log.csp_violations, browser_log.messages
    assert page.evaluate("() => window.pwned ?? null") is None  # and it did not run
    browser_log.errors.clear()  # seen and expected: don't fail this test for it
