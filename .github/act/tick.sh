#!/usr/bin/env bash
# Run .github/workflows/tick.yml on this machine under act, in host mode (no
# Docker), against a local bare origin: the plan, the matrix of workers and
# the merge, as on GitHub. The artifact actions need GitHub's servers, so act
# swaps them for the stand-ins beside this script (--local-repository), which
# hand the delta files (and the plan job's wheels of fleet) over through a
# temporary folder.
#
#   git clone --bare . /tmp/origin.git
#   .github/act/tick.sh /tmp/origin.git --input workers=2
#
# Arguments after ORIGIN go to act as they are (--input NAME=VALUE, -j JOB, ...).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: .github/act/tick.sh ORIGIN [act arguments]" >&2
  exit 2
fi
origin=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
cd "$(git -C "$here" rev-parse --show-toplevel)"
workflow=.github/workflows/tick.yml
# the stand-ins replace the very versions tick.yml pins
upload=$(grep -o 'actions/upload-artifact@[0-9a-f]\{40\}' "$workflow" | head -n 1)
download=$(grep -o 'actions/download-artifact@[0-9a-f]\{40\}' "$workflow" | head -n 1)
if [ -z "$upload" ] || [ -z "$download" ]; then
  echo "$workflow: no actions/upload-artifact@SHA or actions/download-artifact@SHA to stand in for" >&2
  exit 1
fi
handoff=$(mktemp -d)
trap 'rm -rf "$handoff"' EXIT
act workflow_dispatch -W "$workflow" -P ubuntu-latest=-self-hosted --var FLEET_REMOTE="$origin" \
  --env FLEET_ACT_HANDOFF="$handoff" \
  --local-repository "$upload=$here/upload-artifact" \
  --local-repository "$download=$here/download-artifact" "$@"
