"""Pictures of the self-contained HTML pages (the graph viewer) for the report.

Vocabulary:
  headless Chromium  Debian's `chromium` and `chromedriver` on the PATH, driven by Selenium
                     (`requirements-dev.txt`; `make env-dev` installs the browser as root). Where
                     either is missing the picture is skipped with a message, never an error: the
                     page itself is the result, the PNG only shows it in the report.
"""

from __future__ import annotations

import os
import shutil


def screenshot_page(page: str, png: str, width: int = 1600, height: int = 1000,
                    driver=None) -> tuple[str | None, str]:
  """Opens `page` in headless Chromium and saves what a reader first sees as `png`.

  Args:
    page: an .html file.
    png: where to write the PNG; parent folders are created.
    width, height: the browser window in pixels.
    driver: a Selenium Chrome driver to reuse (left open); None starts and closes one.

  Returns:
    (png or None, message): None with the reason when no browser is available or the page
    logged an error.
  """
  own = driver is None
  if own:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
      return None, "no screenshot: chromium / chromedriver not on the PATH (make env-dev)"
    try:
      from selenium import webdriver  # a dev dependency; the library runs without it
    except ImportError:
      return None, "no screenshot: selenium is not installed (requirements-dev.txt)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
      opts.add_argument(arg)
    opts.set_capability("goog:loggingOptions", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
  try:
    # The viewport, not the outer window, is what the PNG shows.
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    driver.get("file://" + os.path.abspath(page))
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    if errors:
      return None, f"no screenshot: {page} logged errors: {errors[:3]}"
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    driver.save_screenshot(png)
  finally:
    if own:
      driver.quit()
  return png, f"screenshot of {os.path.basename(page)} in headless Chromium"
