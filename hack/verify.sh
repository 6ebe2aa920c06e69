#!/usr/bin/env bash
# Fails when anything derived is stale: generated code and CRD (regenerated and diffed),
# go.mod/go.sum, and formatting; or when a document links to a file that does not exist.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

status=0
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^generated/'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:" $unformatted >&2
	status=1
fi

# Every relative link in README.md and docs/*.md must name a file or directory of the tree
# (anchors are not checked). Links inside fenced code blocks are code, not links.
for doc in README.md docs/*.md; do
	[ -e "$doc" ] || continue
	dir=$(dirname "$doc")
	while IFS= read -r target; do
		file=${target%%#*}
		if [ -n "$file" ] && [ ! -e "$dir/$file" ]; then
			echo "$doc: link to $target, which does not exist" >&2
			status=1
		fi
	done < <(awk '/^[[:space:]]*```/ {fence = !fence; next} !fence' "$doc" |
		grep -oE '\]\([^)[:space:]]+\)' | sed -E 's/^\]\((.*)\)$/\1/' |
		grep -vE '^([a-z]+:|#)' || true)
done

go mod tidy
"$root/hack/update-codegen.sh" >/dev/null
if ! git diff --exit-code -- go.mod go.sum apis generated crds; then
	echo "generated files or go.mod are stale: run 'make generate' and 'go mod tidy', then commit" >&2
	status=1
fi
untracked=$(git ls-files --others --exclude-standard -- apis generated crds)
if [ -n "$untracked" ]; then
	echo "generation produced files not in git:" $untracked >&2
	status=1
fi

# hack/tools/kubernetes pins the modules it shares with the project at the project's versions, so
# that a cold machine compiles them once (see its go.mod).
drift=$(hack/tools.sh shared-version-drift)
if [ -n "$drift" ]; then
	echo "hack/tools/kubernetes/go.mod pins modules it shares with the project at other versions; require the project's there:" >&2
	echo "$drift" >&2
	status=1
fi

# deploy/ and the chart name one image version, and a tagged commit names its own tag, so the
# manifests and the image a release builds cannot drift apart.
if ! hack/release.sh check-version "$(awk '$1 == "newTag:" {print $2}' deploy/base/kustomization.yaml)"; then
	status=1
fi
if tag=$(git describe --tags --exact-match 2>/dev/null) && ! hack/release.sh check-version "$tag"; then
	status=1
fi
if ! git diff --exit-code -- deploy/chart; then
	echo "the chart's CRD differs from crds/: run 'make generate', then commit" >&2
	status=1
fi
exit $status
