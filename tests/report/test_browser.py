"""report.html in a real browser: headless Chromium (OS package) driven by Selenium.

Skipped, with the reason, where Selenium or a Chromium and its driver are not installed (.ci/run installs
them with apt-get when it can). Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

pytestmark = pytest.mark.slow  # trains the tiny plan and starts a browser


def _browser_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary = next((b for b in (os.environ.get("ARCHLAB_CHROMIUM"), shutil.which("chromium"),
                               shutil.which("chromium-browser"), shutil.which("google-chrome")) if b), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no headless Chromium with chromedriver here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                "--disable-gpu"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(driver), options=options)
    except Exception as exc:  # noqa: BLE001  (a browser that cannot start here is a skip, not a failure)
        pytest.skip(f"Chromium did not start: {str(exc).splitlines()[0]}")


@pytest.fixture
def page(finished_plan):
    browser = _browser_or_skip()
    _, runs = finished_plan
    browser.get((runs / "tiny_report" / "report.html").resolve().as_uri())
    time.sleep(0.5)
    yield browser
    browser.quit()


def _column(browser, table_id: str, header: str) -> int:
    from selenium.webdriver.common.by import By

    names = [th.text.strip() for th in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")]
    return names.index(header)


def _values(browser, table_id: str, col: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [tr.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort")
            for tr in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def test_sorting_a_column_orders_the_rows_missing_values_last(page, tmp_path):
    from selenium.webdriver.common.by import By

    assert page.execute_script("return typeof Plotly") == "object"  # the vendored copy, loaded from file://
    rows = page.find_elements(By.CSS_SELECTOR, "#section-0 tbody tr")
    assert len(rows) == 4 and "baseline" in rows[0].get_attribute("class")
    text = page.find_element(By.ID, "section-0").text
    assert "learned" in text and "failed" in text and "pending" in text
    # trained runs show the FLOPs their trainer counted (summary.json), not the ≈6·N·D estimate
    flops = _values(page, "section-0", _column(page, "section-0", "Train FLOPs"))
    assert flops[0] not in ("—", "") and not flops[0].startswith("≈"), flops
    col = _column(page, "section-0", "bits_per_byte")
    header = page.find_elements(By.CSS_SELECTOR, "#section-0 thead th")[col]
    header.click()
    values = _values(page, "section-0", col)
    numbers = [float(v) for v in values if v]
    assert len(numbers) == 2 and numbers == sorted(numbers) and values[2:] == ["", ""]  # failed/pending last
    assert header.get_attribute("aria-sort") == "ascending"
    page.save_screenshot(str(tmp_path / "sorted_ascending.png"))
    header.click()
    values = _values(page, "section-0", col)
    assert [float(v) for v in values if v] == sorted(numbers, reverse=True)
    params = _column(page, "section-0", "Params")
    page.find_elements(By.CSS_SELECTOR, "#section-0 thead th")[params].click()
    sizes = [float(v) for v in _values(page, "section-0", params)]
    assert sizes == sorted(sizes) and len(set(sizes)) >= 2  # the wide run is larger
    assert page.find_elements(By.CSS_SELECTOR, "#section-0 td .ci .rng")  # intervals drawn as ranges
    page.save_screenshot(str(tmp_path / "sorted_by_params.png"))


def test_a_drill_down_shows_config_diff_metrics_curve_samples_env_and_the_error_line(page, tmp_path):
    from selenium.webdriver.common.by import By
    from tests.report.conftest import FAILED_LINE

    link = next(a for a in page.find_elements(By.CSS_SELECTOR, "#runs a.drill") if a.text.startswith("rope"))
    link.click()
    time.sleep(0.5)
    details = page.find_element(By.ID, "run-" + link.get_attribute("data-run"))
    assert details.get_attribute("open") is not None
    diff = details.find_element(By.CSS_SELECTOR, "table.config-diff").text
    assert "model.config.position_embedding" in diff and "learned" in diff and "rope" in diff
    assert "train.max_steps" not in diff  # equal keys are not part of the diff
    body = details.text
    assert "loss.bits_per_byte" in body and "95% interval" in body and "Samples" in body
    assert "torch" in body and "git_sha" in body and "Parameters" in body
    assert details.find_elements(By.CSS_SELECTOR, ".run-plot .main-svg")  # its curve, drawn by Plotly
    page.save_screenshot(str(tmp_path / "drilldown_rope.png"))
    failed = next(a for a in page.find_elements(By.CSS_SELECTOR, "#runs a.drill") if a.text.startswith("nope"))
    failed.click()
    time.sleep(0.3)
    panel = page.find_element(By.ID, "run-" + failed.get_attribute("data-run"))
    assert FAILED_LINE in panel.text and "failed" in panel.text
    page.save_screenshot(str(tmp_path / "drilldown_failed.png"))


def test_a_legend_click_hides_a_run_curve(page, tmp_path):
    from selenium.webdriver.common.by import By

    plot = page.find_element(By.ID, "curves-0")
    names = page.execute_script("return arguments[0].data.map(t => t.name)", plot)
    assert any(n.startswith("learned") for n in names) and any(n.startswith("rope") for n in names)
    page.find_elements(By.CSS_SELECTOR, "#curves-0 .legendtoggle")[0].click()
    time.sleep(1.0)  # Plotly waits out its double-click delay (300 ms) before a single click acts
    assert page.execute_script("return arguments[0].data[0].visible", plot) == "legendonly"
    page.save_screenshot(str(tmp_path / "legend_toggled.png"))
