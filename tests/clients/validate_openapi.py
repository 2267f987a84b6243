"""Validates an OpenAPI document (stdin) with openapi-spec-validator; prints its version."""

import json
import sys

from openapi_spec_validator import validate

spec = json.load(sys.stdin)
validate(spec)
print(spec["openapi"])
