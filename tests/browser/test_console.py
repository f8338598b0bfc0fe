"""The console with auth off (loopback), in chromium: the golden path, the HITL lane, a refused
decision shown as a message, and the cancel of a running run. Each asserts on the page and on the
API (GET /runs/{id}, /audit), so a page that only looks right cannot pass."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.browser.conftest import DESKTOP, PHONE, SCREENSHOTS, Watched
from tests.browser.helpers import LIVE_SECONDS, alert_text, expect_status, file_intent, wait_api
from tests.e2e.conftest import Stack


def test_golden_path_intent_to_gate_live_then_approve_to_succeeded_with_the_diff(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    goal = "add a healthz note <script>alert('x')</script>"
    run_id = file_intent(page, stack.base, goal)
    page.evaluate("window.intentdSamePage = true")  # gone if the page reloads

    expect_status(page, "waiting_input")
    expect(page.locator("#next-action")).to_have_text("approve_plan")
    assert page.evaluate("window.intentdSamePage") is True, "the page reloaded to show the gate"
    run = stack.get(run_id)
    assert run["status"] == "waiting_input" and run["nextAction"] == "approve_plan"
    expect(page.locator("#plan-hash")).to_have_text(run["planHash"])
    # Agent-facing text is shown as text: the goal's markup is escaped, no inline script exists.
    expect(page.locator("#goal")).to_have_text(goal)
    assert page.locator("script:not([src])").count() == 0
    # Cancel is an operator act on the run, not a decision on the plan: its own panel, after Decide.
    expect(page.locator("#decide #approve-form")).to_be_visible()
    expect(page.locator("#decide #cancel-form")).to_have_count(0)
    expect(page.locator("#operator-actions #cancel-form")).to_be_visible()
    assert page.evaluate(
        "document.getElementById('decide').compareDocumentPosition(document.getElementById('operator-actions'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING"
    ), "the operator actions come before the decisions"
    # No patch yet: one muted line, not two empty panels.
    expect(page.locator("#diff.pending")).to_contain_text("appear once the plan is approved and applied")
    expect(page.locator("#diff-h, #commands-h")).to_have_count(0)
    watched.shot("run-detail-gate")

    page.get_by_role("button", name=f"Approve plan {run['planHash'][:12]}").click()
    expect_status(page, "succeeded")
    assert stack.get(run_id)["status"] == "succeeded"
    expect(page.locator(".d2h-file-wrapper").first).to_be_visible()
    expect(page.locator(".d2h-file-side-diff").first).to_be_visible()  # side by side by default
    assert page.locator("#diff-view [class*='hljs-']").count() > 0, "the diff is not highlighted"
    page.get_by_label("Unified").check()
    expect(page.locator("#diff-view .d2h-file-diff").first).to_be_visible()
    expect(page.locator("#commands")).to_contain_text("exit 0")
    expect(page.locator("#diff.pending")).to_have_count(0)  # the patch exists: the full panels
    expect(page.locator("#operator-actions")).to_have_count(0)  # an ended run: nothing to cancel or retry
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the patch").click()
    assert download.value.suggested_filename == f"{run_id}.diff"
    assert Path(download.value.path()).read_text() == stack.get(run_id)["diff"]
    watched.shot("run-detail-succeeded")

    audit = stack.http.get(f"/runs/{run_id}/audit").json()["rows"]
    acts = {r["act"]: r["channel"] for r in audit}
    assert acts.get("intent") == acts.get("run_start") == acts.get("approve") == "console", audit

    page.goto(f"{stack.base}/ui/runs?status=succeeded")
    row = page.locator(f"tr[data-run-id='{run_id}']")
    expect(row).to_contain_text("succeeded")
    watched.shot("runs-list")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "overflows at 390 px"
    watched.shot("runs-list-390px")
    page.set_viewport_size(DESKTOP)


def test_hitl_answer_the_question_in_the_form_with_the_keyboard(stack: Stack, watched: Watched) -> None:
    page = watched.page
    run_id = file_intent(page, stack.base, "ask user which audience the note is for")
    expect_status(page, "waiting_input")
    expect(page.locator("#next-action")).to_have_text("provide_input")
    question = stack.get(run_id)["plan"]["questions"][0]
    field = page.get_by_label(question)
    field.focus()
    page.keyboard.type("site reliability engineers")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Send the answer"
    page.keyboard.press("Enter")

    expect(page.get_by_role("status").first).to_contain_text("Answer sent.")
    # The recompile ends within a second, often while the answer's own refresh is in flight: the page
    # must still show it from the stream, not at its 30 s poll.
    expect(page.locator("#next-action")).to_have_text("approve_plan", timeout=LIVE_SECONDS * 1000)
    run = stack.get(run_id)
    assert run["plan"]["questions"] == []
    assert "site reliability engineers" in run["plan"]["summary"]  # the recompiled plan used the answer
    expect(page.locator("#plan")).to_contain_text("site reliability engineers")


def test_a_refused_decision_is_a_message_not_json(stack: Stack, browser: Browser, watched: Watched) -> None:
    """Two operators at the gate; the second one's page is stale (its refresh is held back), so
    their approval reaches a run that moved on: the API's 409 reads as a sentence."""
    page = watched.page
    run_id = file_intent(page, stack.base, "write the release note")
    expect_status(page, "waiting_input")
    expect(page.locator("#next-action")).to_have_text("approve_plan")

    other = browser.new_context(viewport=DESKTOP)
    stale = other.new_page()
    stale.route("**/body?v=*", lambda route: route.abort())  # this page never refreshes itself
    stale.goto(f"{stack.base}/ui/runs/{run_id}")
    expect(stale.locator("#approve-form")).to_be_visible()

    page.get_by_role("button", name="Approve plan").click()
    wait_api(stack, run_id, lambda r: r["nextAction"] != "approve_plan")
    stale.get_by_label("Approve as").fill("second-operator")
    stale.get_by_role("button", name="Approve plan").click()
    text = alert_text(stale)
    assert "[409 " in text and "{" not in text, text
    assert any(s in text for s in ("already approved", "past the approval gate", "already ended")), text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stale.screenshot(path=str(SCREENSHOTS / "refused-decision-stale-page.png"), full_page=True)
    other.close()
    approvals = stack.get(run_id)["approvals"]
    assert [a["approvedBy"] for a in approvals] == ["operator"], approvals  # the refused one wrote nothing


def test_cancel_a_running_run(stack: Stack, watched: Watched) -> None:
    page = watched.page
    run_id = file_intent(page, stack.base, "slow test for the cancel button")
    expect_status(page, "waiting_input")
    page.get_by_role("button", name="Approve plan").click()
    # The last acceptance command sleeps 30 s: wait until the sandbox runs it.
    wait_api(
        stack,
        run_id,
        lambda r: any(s["stepId"] == "ExecuteST" and s["finishedAt"] is None for s in r["steps"]),
    )
    expect_status(page, "running")
    # With the keyboard, from its labelled field in the Operator actions panel.
    reason = page.locator("#operator-actions").get_by_label("Reason for canceling (optional)")
    reason.focus()
    page.keyboard.type("no longer needed")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Cancel run"
    page.keyboard.press("Enter")
    expect_status(page, "canceled", timeout=20)
    expect(page.get_by_role("status").first).to_contain_text("Run canceled.")
    run = wait_api(stack, run_id, lambda r: r["finishedAt"] is not None, timeout=20)
    assert run["status"] == "canceled"
    expect(page.locator("#cancel-form")).to_have_count(0)  # nothing left to cancel
    page.goto(f"{stack.base}/ui/runs")  # every run of this module, in their several states
    expect(page.locator(f"tr[data-run-id='{run_id}']")).to_contain_text("canceled")
    watched.shot("runs-list-all")


def test_every_page_carries_the_csp_and_escapes_agent_text(stack: Stack) -> None:
    """Over plain HTTP: the headers of /ui, the goal's markup escaped in the HTML, no open redirect."""
    goal = 'a note <img src=x onerror="alert(1)">'
    _, run_id = stack.run(goal)
    wait_api(stack, run_id, lambda r: r["status"] == "waiting_input")
    page = stack.http.get(f"/ui/runs/{run_id}")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text and "<img src=x" not in page.text
    csrf = page.cookies.get("intentd_csrf")
    assert csrf and f'value="{csrf}"' in page.text  # the forms carry the token the cookie holds
    login = stack.http.post(
        "/ui/login", data={"csrf": csrf, "next": "//evil.example/", "token": "x"}, cookies={"intentd_csrf": csrf}
    )
    assert login.status_code == 303 and login.headers["location"] == "/ui/runs"  # auth off: back home, never away
    no_patch = stack.http.get(f"/ui/runs/{run_id}/patch")  # at the gate: nothing to download yet
    assert no_patch.status_code == 409 and "This run has no patch yet." in no_patch.text
    assert stack.http.get("/ui/static/..%2F__init__.py").status_code == 404
    assert stack.http.get("/ui/static/vendor/htmx.min.js").status_code == 200
