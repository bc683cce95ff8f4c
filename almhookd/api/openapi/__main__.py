"""``python -m almhookd.api.openapi --markdown > docs/API.md`` (or ``--json``): the API
description without a daemon, so the reference can be regenerated from a checkout."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from almhookd.api.openapi.document import openapi_document
from almhookd.api.openapi.markdown import markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m almhookd.api.openapi",
        description="Print the HTTP API's OpenAPI 3.1 document, or docs/API.md.",
    )
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--json", action="store_true", help="the OpenAPI document")
    output.add_argument("--markdown", action="store_true", help="docs/API.md")
    args = parser.parse_args(argv)
    document = openapi_document()
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
