"""The owners' console in a real browser (headless Chromium through Playwright).

Run by scripts/test-console.sh, which starts a simulated cleanroomd, creates the parties,
uploads Northfield's table and the researcher's module. Every wait here is for something to
appear on the page or in a process's output (Playwright's auto-waiting), never a sleep.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

PARAMS = '{"group_by":"diagnosis","min_group":10}'
# Generous: a busy 2-core machine compiles the module on first run.
WAIT_MS = 180_000


class Console:
    """A `cleanroom console` process and the address it printed."""

    def __init__(self, cleanroom, key, env):
        self.proc = subprocess.Popen(
            [cleanroom, "console", "--key", key, "--no-open"],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            env=env,
        )
        for line in self.proc.stdout:
            m = re.search(r"(http://127\.0\.0\.1:\d+)/login\?token=([0-9a-f]{64})", line)
            if m:
                self.base, self.token = m.group(1), m.group(2)
                self.login = m.group(0)
                break
        else:
            raise SystemExit(f"cleanroom console exited ({self.proc.wait()}) without an address")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def cli(args, cleanroom, env):
    out = subprocess.run([cleanroom, *args, "--json"], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def open_page(p, chromium):
    """Headless Chromium (the system's) and a laptop-sized page that waits up to WAIT_MS."""
    browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    return browser, page


def nav(page, section):
    """Follow a link of the console's navigation bar."""
    page.get_by_role("navigation").get_by_role("link", name=section, exact=True).click()


def raw_status(url, headers, data=None):
    """The HTTP status of a request made outside the browser (a foreign page or tool)."""
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cleanroom", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--chromium", required=True)
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    shots = work / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    owner_key = str(work / "keys" / "northfield.json")
    researcher_key = str(work / "keys" / "researcher.json")
    env = dict(os.environ)

    # The researcher asks Northfield for a grant: a pending request in the owner's console.
    cli(["run", "request", "--key", researcher_key, "--module", a.module,
         "--input", f"northfield={a.dataset}", "--params", PARAMS,
         "--note", "pooled cohort statistics by ICD-10 category"], a.cleanroom, env)

    console = Console(a.cleanroom, owner_key, env)
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, a.chromium)

            # Without the session token, or with a wrong one, nothing is shown.
            resp = page.goto(console.base + "/grants")
            assert resp.status == 401, resp.status
            expect(page.locator("main")).to_contain_text("session token")
            resp = page.goto(console.base + "/login?token=" + "0" * 64)
            assert resp.status == 401, resp.status

            # The enclave page: attestation status in words.
            page.goto(console.login)
            # The printed link opened one session; it opens no second one.
            port = console.base.rsplit(":", 1)[1]
            session = [c for c in page.context.cookies() if c["name"] == f"cleanroom_console_{port}"]
            assert len(session) == 1, page.context.cookies()
            assert session[0]["value"] != console.token, "the session is not the printed token"
            assert raw_status(console.login, {}) == 401
            # A page on another origin cannot post to the console, even with the cookie, and
            # a rebinding host name is refused.
            cookie = {"Cookie": f"cleanroom_console_{port}={session[0]['value']}"}
            assert raw_status(console.base + "/grants", cookie) == 200
            assert raw_status(console.base + "/grants/sign",
                              {**cookie, "Origin": "http://evil.example",
                               "Content-Type": "application/x-www-form-urlencoded"},
                              b"policy=%7B%7D") == 403
            assert raw_status(console.base + "/grants", {**cookie, "Host": "evil.example"}) == 403
            page.goto(console.base + "/")
            expect(page.locator("#attestation")).to_contain_text("Simulation")
            expect(page.locator("dl.facts")).to_contain_text("Measurement reported")
            page.screenshot(path=str(shots / "enclave.png"), full_page=True)

            # Grants: the pending request, approved with a confirmation of what is signed.
            nav(page, "Grants")
            pending = page.locator("#pending")
            expect(pending).to_contain_text(a.module[:12])
            expect(pending).to_contain_text("group_by")
            expect(pending).to_contain_text("uploaded by")
            page.screenshot(path=str(shots / "grants-pending.png"), full_page=True)
            pending.get_by_role("link", name="Review and approve").click()
            page.get_by_label("Most runs in total").fill("5")
            page.get_by_label(re.compile("^Identifier columns")).fill("mrn")
            page.get_by_label("Hold outputs for my review before release (dataset-wide)").check()
            page.get_by_role("button", name="Check the change…").click()
            diff = page.locator("#policy-diff")
            expect(diff).to_contain_text(a.module)
            expect(diff.locator("ins", has_text='"mrn"')).to_be_visible()
            expect(diff.locator("ins").first).to_be_visible()
            page.screenshot(path=str(shots / "confirm.png"), full_page=True)
            page.locator("#sign").click()
            expect(page.locator("#signed")).to_contain_text("Signed and published policy v1")
            nav(page, "Grants")
            expect(page.locator("#no-pending")).to_be_visible()

            # Runs, live: the researcher's run (started from the CLI) appears without a reload.
            nav(page, "Runs")
            expect(page.locator("#live")).to_contain_text("connected")
            run = cli(["run", "submit", "--key", researcher_key, "--module", a.module,
                       "--input", f"northfield={a.dataset}", "--params", PARAMS],
                      a.cleanroom, env)["run"]
            row = page.locator(f"#run-{run}")
            expect(row).to_be_visible()
            expect(row.locator(".state")).to_have_text("held for review")
            expect(page.locator(".chart figcaption")).to_contain_text("1 run(s)")
            page.screenshot(path=str(shots / "runs-live.png"), full_page=True)

            # Review: decrypted here, with the rule outcomes; release with a reason.
            nav(page, "Review")
            page.locator(f"a[href='/review/{run}']").click()
            expect(page.locator("#rules")).to_contain_text("held for review")
            expect(page.locator("table.data").first).to_be_visible()
            page.screenshot(path=str(shots / "review.png"), full_page=True)
            page.get_by_label("Reason (recorded in the audit log)").fill("aggregates only")
            page.locator("#release").click()
            expect(page.locator("#decided")).to_contain_text("released")

            # Audit: verified, filterable, exportable.
            nav(page, "Audit")
            expect(page.locator("#audit-verdict")).to_contain_text("Verified")
            expect(page.locator("#audit")).to_contain_text("run.released")
            page.get_by_label("Filter by action").fill("policy.")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#audit tbody tr")).to_have_count(1)
            page.screenshot(path=str(shots / "audit.png"), full_page=True)
            with page.expect_download() as download:
                page.get_by_role("link", name=re.compile("Export")).click()
            saved = json.loads(pathlib.Path(download.value.path()).read_text())
            assert saved["head"]["size"] == len(saved["items"]) > 0

            # The researcher gets the released result.
            cli(["result", "fetch", run, "--key", researcher_key, "--out", str(work / "results")],
                a.cleanroom, env)

            # A tampered log: the head this owner verified before no longer matches what the
            # server serves (here the saved head's root is altered) and the page says so.
            heads = pathlib.Path(owner_key + ".audit-heads.json")
            original = heads.read_text()
            saved_heads = json.loads(original)
            for head in saved_heads.values():
                head["root"] = ("0" if head["root"][0] != "0" else "1") + head["root"][1:]
            heads.write_text(json.dumps(saved_heads))
            page.goto(console.base + "/audit")
            expect(page.locator("#audit-verdict")).to_contain_text("Does not verify")
            page.screenshot(path=str(shots / "audit-tampered.png"), full_page=True)
            heads.write_text(original)
            browser.close()
    finally:
        console.stop()

    # A server that fails attestation (the owner pinned another measurement): the console
    # says why and sends it nothing.
    bad_env = dict(env, CLEANROOM_MEASUREMENT="ab" * 48)
    bad = Console(a.cleanroom, owner_key, bad_env)
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, a.chromium)
            page.goto(bad.login)
            expect(page.locator("#attestation")).to_contain_text("Failed")
            expect(page.locator("#attestation")).to_contain_text("measurement")
            page.screenshot(path=str(shots / "attestation-failed.png"), full_page=True)
            resp = page.goto(bad.base + "/grants")
            assert resp.status == 502, resp.status
            expect(page.locator("main")).to_contain_text("did not pass attestation")
            browser.close()
    finally:
        bad.stop()
    print(f"console browser test passed; screenshots in {shots}")


if __name__ == "__main__":
    main()
