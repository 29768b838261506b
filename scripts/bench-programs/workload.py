# Python workload for scripts/bench-preload.sh (run with PYTHONMALLOC=malloc
# so that objects come from malloc): JSON round trip, dicts, regexes.
import json
import re

records = [
    {"id": i, "name": "user%06d" % i, "tags": ["t%d" % (i % 17), "g%d" % (i % 5)], "score": i * 0.25}
    for i in range(100000)
]
text = json.dumps(records)
back = json.loads(text)
index = {}
for r in back:
    for t in r["tags"]:
        index.setdefault(t, []).append(r["name"])
words = re.findall(r"user\d+", text)
print(len(text), len(back), len(index), len(words))
