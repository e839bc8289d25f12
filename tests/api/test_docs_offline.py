"""``/docs`` works on a farm with no way out (issue 19): Swagger UI's page and assets come
from the API itself, not from a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_the_docs_page_loads_only_from_the_api(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "swagger" in page.text.lower()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources, page.text
    for source in sources:
        assert source.startswith("/"), f"{source} is not served by the API"
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert asset.content
    assert "cdn" not in page.text.lower()
    assert client.get("/openapi.json").json()["info"]["title"] == "tunefarm"
