"""Click-to-result time of the viewer: remove one finding on a bundled example, in headless Chromium.

    python benchmarks/viewer_timing.py --steps 50 --threads 2 --repeats 3

Starts ``cvlm serve`` on a free port of 127.0.0.1 (a fresh workdir), opens the first example, ticks the
first finding and clicks Explain; the time runs from the click until the regenerated report is shown.
The first click also loads the models; later clicks are the steady state. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="viewer-timing-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "cvlm.cli", "serve", "--port", str(port), "--steps", str(args.steps)]
    command += ["--threads", str(args.threads), "--workdir", str(work)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 180:
                    raise SystemExit("cvlm serve did not start") from None
                time.sleep(0.5)
        print(f"server answers after {time.perf_counter() - started:.1f} s")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox", "--headless=new"]
            )
            page = browser.new_page()
            page.set_default_timeout(600_000)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#open-example").click()
            expect(page.locator("#status")).to_contain_text("The generator writes:")
            page.locator("#remove input[type=checkbox]").first.check()
            finding = page.locator("#remove label").first.inner_text().strip()
            for i in range(args.repeats):
                before = page.locator("#status").inner_text()
                clicked = time.perf_counter()
                page.locator("#explain").click()
                # The status reads "Done (run 2): 1 edit(s) in 6.1 s." when the result is on the page.
                page.wait_for_function(
                    "before => { const t = document.querySelector('#status').innerText;"
                    " return t.startsWith('Done') && t !== before; }",
                    arg=before,
                    timeout=600_000,
                )
                expect(page.locator("#regenerated textarea")).not_to_have_value("")
                seconds = time.perf_counter() - clicked
                status = page.locator("#status").inner_text()
                print(f"click {i + 1}: remove {finding}, T={args.steps}: {seconds:.1f} s ({status})")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
