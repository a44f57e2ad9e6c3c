"""Settings the whole test session needs before torch loads.

A test run on a busy machine must not crawl: OpenMP threads that spin-wait for cores other jobs hold
make torch code 10-50x slower (``benchmarks/cpu_contention.py``). The ``cvlm`` command sets a passive
wait policy before it imports torch; pytest imports this file before any test module, so the tests get
the same setting (a user's own ``OMP_WAIT_POLICY`` / ``OMP_NUM_THREADS`` are kept).
"""

import shutil

import pytest

from cvlm.threads import configure_threads

configure_threads()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that runs ``cvlm --threads 1`` or trains with ``threads=1`` leaves the next one as it was."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser); fails, never skips, without it."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install -y chromium (CI's .ci/run does this)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--headless=new"]
        )
        try:
            yield browser
        finally:
            browser.close()
