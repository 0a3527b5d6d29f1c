import os
import signal
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import embodied_rl  # noqa: E402,F401  (chooses the GL backend before any test imports mujoco)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op torch thread for the whole suite, set before any fixture trains: the
    tests' networks are tiny and only lose from threading on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def interruptible() -> dict:
    """``Popen`` keyword arguments for a child that a test interrupts with SIGINT. A shell
    starts a background job (``make test &``, some CI runners) with SIGINT ignored; children
    inherit that, and Python then installs no KeyboardInterrupt handler, so the child would
    never see the test's Ctrl-C. The child gets the default disposition back."""
    return {"preexec_fn": _default_sigint}


def _interrupt_midway(
    process, done, at_least: int, total: int, sig: int = signal.SIGINT, timeout_s: float = 90.0
) -> bool:
    """Wait until ``done()`` (units of work the child has finished) reaches ``at_least``, then
    freeze the child with SIGSTOP and look again: only when at least a tenth of ``total`` is
    still to do does it send ``sig`` (delivered on SIGCONT, inside the work loop). Returns False
    when the child got that far before the test could stop it (a descheduled test process on a
    loaded machine), and the caller starts a fresh run. Without the freeze, a signal sent "after
    the third episode" could reach a run that had already finished."""
    deadline = time.monotonic() + timeout_s
    while done() < at_least:
        if process.poll() is not None:
            pytest.fail(f"the process ended early:\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the child's work")
        time.sleep(0.02)
    process.send_signal(signal.SIGSTOP)
    try:
        if process.poll() is not None or done() > total - max(total // 10, 4):
            return False
        process.send_signal(sig)
        return True
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def interrupt_midway():
    """``interrupt_midway(process, done, at_least, total, sig=SIGINT) -> bool``: signal a child
    in the middle of its work, never after it (see ``_interrupt_midway``)."""
    return _interrupt_midway


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, installed by scripts/setup.sh
# headless as root, and no background connections (this machine's network is closed)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def chromium():
    """A headless Debian Chromium driven by Playwright (no browser download); skips when
    Chromium is absent."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium, installed by scripts/setup.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
