"""Provokes each error of lit-mux's /v1 front door with the official `openai` package.

Usage: openai_errors.py BASE_URL API_KEY
Backends `limited` (rate limited) and `broken` (failing) must be configured.
Prints one JSON object: for each case, the exception the client raised and what it parsed.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=30)
user = [{"role": "user", "content": "hi"}]
seen = {}


def attempt(case, call):
    try:
        call()
        seen[case] = None
    except openai.APIStatusError as error:
        seen[case] = {
            "class": type(error).__name__,
            "status": error.status_code,
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
            "retry_after": error.response.headers.get("retry-after"),
        }


attempt("wrong_key", lambda: OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list())
attempt("unknown_model", lambda: client.chat.completions.create(model="nope/x", messages=user))
attempt("unknown_path", lambda: client.get("/nope", cast_to=object))
attempt("wrong_method", lambda: client.get("/chat/completions", cast_to=object))
attempt(
    "wrong_type",
    lambda: client.post("/chat/completions", body={"model": 3, "messages": user}, cast_to=object),
)
attempt("bad_value", lambda: client.chat.completions.create(model="echo", messages=user, temperature=5))
attempt("rate_limited", lambda: client.chat.completions.create(model="limited/m", messages=user))
attempt("backend_failed", lambda: client.chat.completions.create(model="broken/m", messages=user))

print(json.dumps(seen))
