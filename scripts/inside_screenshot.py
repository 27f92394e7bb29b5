"""A picture of mode=inspect's ``inside.html`` at one view, for the docs.

    python scripts/inside_screenshot.py --page runs/charlm/RUN/inside.html \\
        --view "module=rnn&layer=l1&quantity=c&cell=17" --out docs/images/inside_charlm.png

Opens the page in headless Chromium (Debian's ``/usr/bin/chromium`` and
``/usr/bin/chromedriver``, as scripts/demo_screenshots.py does), selects the view through
the URL's hash (module, layer, direction, quantity, cell), hovers one position if
``--hover N`` is given, and writes a ``--size`` screenshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_screenshots import browser  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", type=Path, required=True)
    parser.add_argument("--view", default="", help="module=rnn&layer=l1&quantity=c&cell=17")
    parser.add_argument("--hover", type=int, help="the position to hover (shows every gate)")
    parser.add_argument("--size", default="1200x700")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as profile:
        driver = browser(width, height, Path(profile))
        try:
            driver.get(f"{args.page.resolve().as_uri()}#{args.view}")
            spans = driver.find_elements(By.CSS_SELECTOR, "#text span")
            if args.hover is not None and spans:
                ActionChains(driver).move_to_element(spans[args.hover]).perform()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(args.out)


if __name__ == "__main__":
    main()
