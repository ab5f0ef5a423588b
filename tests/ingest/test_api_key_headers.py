"""The API and ingest read an API key from the same headers and refuse one in the same words.

Both call one parser (``configcenter.services.presented_key``): a header ingest took that the API
refused, or the other way round, would be a key that works in one place and not the other.
"""

from __future__ import annotations

import orjson
import pytest

from tests.ingest.helpers import event

pytestmark = pytest.mark.django_db

VALID = "valid"  # stands for the admin key (it may both read rules and ingest)


def headers_for(case: dict[str, str], admin_key: str) -> dict[str, str]:
    return {name: value.replace(VALID, admin_key) for name, value in case.items()}


ACCEPTED = {
    "X-API-Key": {"HTTP_X_API_KEY": VALID},
    "X-API-Key with spaces around it": {"HTTP_X_API_KEY": f"  {VALID} "},
    "Bearer": {"HTTP_AUTHORIZATION": f"Bearer {VALID}"},
    "bearer in lower case": {"HTTP_AUTHORIZATION": f"bearer {VALID}"},
    "an empty X-API-Key, then Bearer": {"HTTP_X_API_KEY": "", "HTTP_AUTHORIZATION": f"Bearer {VALID}"},
    "X-API-Key before a wrong Bearer": {"HTTP_X_API_KEY": VALID, "HTTP_AUTHORIZATION": "Bearer mutt_x_wrong"},
}
REFUSED = {
    "no key": ({}, "Authentication credentials were not provided."),
    "another scheme": ({"HTTP_AUTHORIZATION": f"Basic {VALID}"}, "Authentication credentials were not provided."),
    "blank X-API-Key": ({"HTTP_X_API_KEY": "   "}, "Empty API key."),
    "Bearer without a key": ({"HTTP_AUTHORIZATION": "Bearer "}, "Empty API key."),
    "unknown key": ({"HTTP_X_API_KEY": "mutt_deadbeef_not-a-real-secret"}, "Invalid or revoked API key."),
    "not shaped like a key": ({"HTTP_AUTHORIZATION": "Bearer junk"}, "Invalid or revoked API key."),
}


def ingest(client, headers):
    return client.post("/api/v2/ingest", orjson.dumps([event()]), content_type="application/json", **headers)


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_both_accept_a_key_in(client, api_keys, case):
    headers = headers_for(ACCEPTED[case], api_keys["admin"])
    assert client.get("/api/v2/rules/", **headers).status_code == 200
    assert ingest(client, headers).status_code == 202


@pytest.mark.parametrize("case", list(REFUSED))
def test_both_refuse_with_the_same_401(client, api_keys, case):
    case_headers, detail = REFUSED[case]
    headers = headers_for(case_headers, api_keys["admin"])
    for response in (client.get("/api/v2/rules/", **headers), ingest(client, headers)):
        assert (response.status_code, response.json()) == (401, {"detail": detail})
        assert response["WWW-Authenticate"] == 'Bearer realm="mutt"'
