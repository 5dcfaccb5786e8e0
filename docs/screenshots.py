"""Screenshots of the documentation site for the README and for a look at the built pages.

    python docs/screenshots.py [--chromium /usr/bin/chromium]

Builds the site strictly into a temporary folder, serves it on loopback, and saves a 1280 x 800
view of the home page, the CLI reference and one guide page as docs/img/site-*.png, through
headless Chromium (playwright). Look at them before committing.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "img"
SHOTS = {"site-home.png": "", "site-cli.png": "reference/cli/", "site-guide.png": "guide/products-to-maps/"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium binary (default /usr/bin/chromium)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=DOCS.parent,
                       check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        OUT.mkdir(exist_ok=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for name, path in SHOTS.items():
                    page.goto(base + path, wait_until="networkidle")
                    page.screenshot(path=str(OUT / name))
                    print(f"{OUT / name}: {base + path}")
                browser.close()
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
