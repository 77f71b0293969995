#!/bin/sh
# The install steps of the container images, shared with the container smoke test.
#   install.sh deps cpu|gpu   serving dependencies only (cached layer, before the source)
#   install.sh app            the service itself, without touching the dependencies
set -eu
case "$1" in
deps)
    python - "$2" > /tmp/requirements.txt <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"][sys.argv[1]]))
PY
    pip install --no-cache-dir -r /tmp/requirements.txt
    ;;
app)
    pip install --no-cache-dir --no-deps .
    ;;
*)
    echo "usage: $0 deps cpu|gpu | app" >&2
    exit 2
    ;;
esac
