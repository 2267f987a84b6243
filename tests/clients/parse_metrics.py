"""Parses a /metrics exposition (stdin) with the official prometheus_client parsers.

Both the Prometheus text parser and the strict OpenMetrics parser must accept it. Prints
{"families": {name: type}, "samples": [[name, labels, value], ...]} from the OpenMetrics parse.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus_text

text = sys.stdin.read()
# The Prometheus text format has no "# EOF" line; everything else must parse as is.
list(prometheus_text(text.replace("# EOF\n", "")))
families, samples = {}, []
for family in openmetrics(text):
    families[family.name] = family.type
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
print(json.dumps({"families": families, "samples": samples}))
