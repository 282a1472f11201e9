"""A real headless Chromium for the page's tests and its screenshot: Debian's `chromium`
package (scripts/setup installs it) driven by Playwright, since Playwright cannot download its
own browser here. Each launch gets a fresh profile, removed afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
# No sandbox: tests run as root. The rest keeps Chromium from calling home or updating itself,
# so the only traffic is to the page under test on loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium(*, width: int = 1280, height: int = 800) -> AsyncIterator[BrowserContext]:
    """A browser context of a fresh headless Chromium; a missing browser is an error naming
    the package to install."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup)")
    profile = tempfile.mkdtemp(prefix="rainbowd-chromium-")
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": width, "height": height},
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
