"""Regenerates docs/rainbow-page.png (`make screenshot`): runs `rainbowd sandbox --story`, waits
until the story holds a connection on the old color after the switch to the new one, and takes a
picture of the live page in headless Chromium, then stops the sandbox.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import tempfile
from pathlib import Path

from tests.browser import chromium

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "rainbow-page.png"
# Starting the control plane and rolling out two colors on busy shared cores, then the story.
DEADLINE = 600.0
# The moment shown: the new color live, the old one retired and held by its open connection
# (the story waits there for minRetiredAge).
MOMENT = re.compile(r"^story: 4\. ", re.MULTILINE)
PAGE = re.compile(r"^rainbowd's live page: (http://\S+)", re.MULTILINE)


async def read_until(
    stream: asyncio.StreamReader, pattern: re.Pattern[str], seen: list[str]
) -> re.Match[str]:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("the sandbox stopped early:\n" + "".join(seen))
        seen.append(line.decode(errors="replace"))
        sys.stdout.write(seen[-1])
        found = pattern.search("".join(seen))
        if found is not None:
            return found


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="rainbowd-screenshot-") as data:
        sandbox = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rainbowd",
            "sandbox",
            "--story",
            f"--data-dir={data}",
            # Long enough for the picture to be taken while the old color still drains.
            "--min-retired-age=60s",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert sandbox.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(DEADLINE):
                url = (await read_until(sandbox.stdout, PAGE, seen)).group(1)
                await read_until(sandbox.stdout, MOMENT, seen)
            async with chromium(width=1200, height=760) as browser:
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for_selector("tr[data-state=draining] svg.spark")
                # Some more samples, so the sparklines have a history to draw.
                await page.wait_for_timeout(15000)
                OUTPUT.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(OUTPUT), full_page=True)
            print(f"wrote {OUTPUT.relative_to(ROOT)}")
        finally:
            if sandbox.returncode is None:
                sandbox.send_signal(signal.SIGINT)
                # Read on, so the sandbox never blocks on a full pipe while it stops.
                await asyncio.gather(sandbox.stdout.read(), sandbox.wait())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
