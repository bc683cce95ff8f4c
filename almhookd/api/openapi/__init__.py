"""The HTTP API described as OpenAPI 3.1: ``GET /v1/openapi.json`` and ``docs/API.md``.

``schemas`` holds the bodies (the ingest events made from the catalogue, never copied
by hand), ``error_codes`` every ``error.code`` with its status, ``examples`` what
requests and answers look like, ``document`` the routes and ``openapi_document()``,
``markdown`` the reference for people, ``route`` the handler; ``python -m
almhookd.api.openapi --markdown`` writes ``docs/API.md``. The console's pages (HTML,
session cookie) are not part of the API and not described. All of it in one place, so
the answers, the document and the reference are checked against each other by the
tests (``tests/unit/test_openapi.py``, ``tests/integration/test_openapi_answers.py``).
"""
