"""The dashboard in headless Chromium against a real farm (issue 20).

A real ``tunefarm serve``, a coordinator and a measure worker on the machine's Redis and
PostgreSQL (``farm_fixture``); Debian's chromium driven by Playwright. With
``TUNEFARM_SCREENSHOTS_DIR`` set, the jobs list, the job page and the records browser are
saved there as PNGs (``docs/`` has the ones the README shows).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest

from tests.api.farm_fixture import Farm
from tests.api.records_json import matmul_document

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MARKUP = "<script>alert(1)</script>"
TRIALS = 48

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make system-deps)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def _marked_up_model(tiny_cnn_path: Path, folder: Path) -> Path:
    """The tiny CNN with its input named with markup."""
    model = onnx.load(tiny_cnn_path)
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = [MARKUP if name == old else name for name in node.input]
    model.graph.input[0].name = MARKUP
    path = folder / "marked_up.onnx"
    onnx.save(model, path)
    return path


def _sign_in(browser: Any, farm: Farm, team: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    page.alerts = alerts
    page.goto(f"{farm.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", farm.tokens[team])
    page.click("button[type=submit]")
    page.wait_for_url(f"{farm.url}/")
    return page


def farm_team_name(farm: Farm, team: str) -> str:
    return f"team-{team}"  # farm_fixture creates "team-a" and "team-b"


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("TUNEFARM_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


def test_a_job_followed_live_in_chromium(
    farm: Farm, browser: Any, tiny_cnn_path: Path, tmp_path: Path
) -> None:
    model_path = _marked_up_model(tiny_cnn_path, tmp_path)
    with farm.client("a") as client, model_path.open("rb") as stream:
        model = client.post("/v1/models", files={"file": ("marked_up.onnx", stream)}).json()
        job = client.post(
            "/v1/jobs",
            json={"model_id": model["id"], "target": "llvm", "trials": TRIALS},
        ).json()
    job_id = job["id"]

    page = _sign_in(browser, farm, "a")
    assert page.locator(f'a[href="/jobs/{job_id}"]').count() == 1
    page.click(f'a[href="/jobs/{job_id}"]')
    page.wait_for_url(f"**/jobs/{job_id}")
    # A mark on this page load: the reload when the job ends starts its curves afresh, and only
    # the live page's counts must grow.
    page.evaluate("window.liveMark = true")

    # While it tunes, the curves gain points from the event stream (the model's once every task
    # has a time, each task's as its trials come in); the page reloads itself when the job ends.
    seen: list[int] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            state = page.locator("#job-state").text_content(timeout=2000)
            finished = page.locator("#download-library").count() > 0
            live, points = page.evaluate(
                "[window.liveMark === true, [...document.querySelectorAll('[data-points]')]"
                ".reduce((sum, el) => sum + Number(el.dataset.points), 0)]"
            )
        except playwright_api.Error:
            continue  # the page is reloading
        if state == "succeeded" and finished:
            break
        if live and (not seen or points != seen[-1]):
            seen.append(points)
        assert state not in ("failed", "cancelled"), page.content()
        time.sleep(0.1)
    grew = [p for p in seen if p > seen[0]]
    assert len(grew) >= 2 and seen == sorted(seen), f"the live curves did not grow: {seen}"

    # The finished page: the curve from the trials on record, one small curve per task. The loop
    # above can end on the live page just before it reloads, or on the new page before its
    # script has drawn the curve: wait for the drawn curve (CI saw 0 points read too early).
    points = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and points < TRIALS // 2:
        try:
            points = int(page.locator("#model-chart").get_attribute("data-points", timeout=2000))
        except (playwright_api.Error, TypeError, ValueError):
            points = 0  # reloading, or not drawn yet
        time.sleep(0.1)
    assert points >= TRIALS // 2
    assert page.locator(".spark canvas").count() == page.locator("tr[data-task]").count() >= 2
    _screenshot(page, "job")

    # Download from the page; its sha256 is the manifest's.
    with page.expect_download() as download_info:
        page.click("#download-library")
    download = download_info.value
    library = tmp_path / "model.so"
    download.save_as(library)
    sha256 = hashlib.sha256(library.read_bytes()).hexdigest()
    assert sha256 == page.locator("#library-sha256").text_content()
    with farm.client("a") as client:
        manifest = client.get(f"/v1/jobs/{job_id}/manifest").json()
    assert sha256 == manifest["library"]["sha256"]

    # The input's markup name is text on the page, never markup.
    assert page.locator("td.tensor-name").first.text_content() == MARKUP
    assert page.evaluate("document.querySelectorAll('main script:not([type])').length") == 0
    assert page.alerts == []

    page.goto(f"{farm.url}/")
    _screenshot(page, "jobs")
    # The job's trials were measured by our workers: the organisation's records.
    page.goto(f"{farm.url}/records?scope=organisation&target_class=llvm")
    rows = page.locator("table.records tbody tr")
    assert rows.count() >= 2 and "organisation" in rows.first.text_content()
    _screenshot(page, "records")
    page.goto(f"{farm.url}/workers")
    assert page.locator("table.workers tbody tr").count() >= 1

    # Another team: the job id is not found, and its list does not have it.
    other = _sign_in(browser, farm, "b")
    assert other.locator(f'a[href="/jobs/{job_id}"]').count() == 0
    response = other.goto(f"{farm.url}/jobs/{job_id}")
    assert response is not None and response.status == 404
    assert "Not found" in other.locator("h1").text_content()


def test_promote_from_the_records_browser(farm: Farm, browser: Any) -> None:
    # Imported records are the team's own (unverified until a worker measures them).
    with farm.client("b") as client:
        imported = client.post("/v1/records/import", json=matmul_document(factors=(4, 8)))
        assert imported.status_code == 200, imported.text
    page = _sign_in(browser, farm, "b")
    page.goto(f"{farm.url}/records?scope=mine")
    boxes = page.locator("input[name=record_id]")
    assert boxes.count() == 2
    boxes.first.check()
    page.click("text=Promote the checked records")
    page.wait_for_url("**/records?promoted=1")
    assert "1 record promoted" in page.locator(".notice").text_content()
    page.goto(f"{farm.url}/records?scope=promoted")
    promoted = page.locator("table.records tbody tr")
    assert promoted.count() == 1 and "promoted" in promoted.first.text_content()
    # Another team sees it, with the promoting team as its source, and cannot promote it.
    other = _sign_in(browser, farm, "a")
    other.goto(f"{farm.url}/records?scope=promoted")
    assert farm_team_name(farm, "b") in other.locator("table.records tbody tr").first.text_content()
    assert other.locator("input[name=record_id]").count() == 0
