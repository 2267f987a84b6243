"""schemathesis hooks for tests/it/schemathesis.rs.

Adding an MCP server succeeds only for the one program lit-mux allows there: the MCP fixture with
the one argument `healthy` and no environment. The settings make the fixture a likely `command`;
a positive case that names it gets that argument and no `env`, so that servers are added and
stateful testing follows the links to the operations on them. Negative cases are left as they
are: their violation is the point.
"""

import os

import schemathesis
from schemathesis.generation.modes import GenerationMode

FIXTURE = os.environ["LIT_MUX_MCP_FIXTURE"]


@schemathesis.hook
def map_case(context, case):
    operation = case.operation
    if operation.method.upper() != "POST" or operation.path != "/mcp/servers":
        return case
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if isinstance(case.body, dict) and case.body.get("command") == FIXTURE:
        case.body["args"] = ["healthy"]
        case.body.pop("env", None)
    return case
