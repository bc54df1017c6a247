"""Make the README's screenshots (docs/report.png, docs/summary.png) from real pages.

Grades a small class of the bundled examples with the real `gradkit grade`, then photographs the
report of the wrong-hidden-layer example and the class summary in Chromium (Playwright):

    python docs/screenshots.py            # needs the test extra and a Chromium (see the README)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions_example"
CLASS = ["correct.py", "notebook.ipynb", "buggy/no_hidden_sigmoid_derivative.py",
         "buggy/bias_mean_not_sum.py", "buggy/sign_error_dLdP.py", "buggy/gradient_ascent.py",
         "buggy/mse_without_half.py", "styles/element_loops.py"]
#: (page, picture, the top of the page it shows, in CSS pixels at 1000 px wide)
SHOTS = [("reports/no_hidden_sigmoid_derivative.html", "report.png", 1760),
         ("summary.html", "summary.png", None)]


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("GRADKIT_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("no Chromium found: apt-get install chromium, or set GRADKIT_CHROMIUM")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "class").mkdir()
        for name in CLASS:
            shutil.copy(EXAMPLES / name, work / "class" / Path(name).name)
        # relative paths, so the pages show class/<file> rather than this machine's folders
        subprocess.run([sys.executable, "-m", "gradkit", "grade", "class", "--out", "out",
                        "--no-progress"], cwd=work, check=True, stdout=subprocess.DEVNULL)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            for source, picture, height in SHOTS:
                page.goto((work / "out" / source).as_uri())
                target = ROOT / "docs" / picture
                if height is None:
                    page.screenshot(path=str(target), full_page=True)
                else:
                    page.screenshot(path=str(target), full_page=True,
                                    clip={"x": 0, "y": 0, "width": 1000, "height": height})
                print(target)
            browser.close()


if __name__ == "__main__":
    main()
