#!/usr/bin/env bash
# Regenerates everything derived from the API types in apis/: deepcopy functions, the typed
# clientset, listers and informers (k8s.io/code-generator at the version in go.mod) and the CRD
# YAML in crds/ (controller-gen). `make verify` runs this and fails if the tree changed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
module=$(go list -m)

"$root/hack/tools.sh" codegen
codegen_root=$(go list -m -f '{{.Dir}}' k8s.io/code-generator)
# shellcheck source=/dev/null
source "$codegen_root/kube_codegen.sh"

kube::codegen::gen_helpers --boilerplate "$root/hack/boilerplate.go.txt" "$root/apis"

kube::codegen::gen_client \
	--with-watch \
	--output-dir "$root/generated" \
	--output-pkg "$module/generated" \
	--boilerplate "$root/hack/boilerplate.go.txt" \
	"$root/apis"

"$("$root/hack/tools.sh" path controller-gen)" \
	crd paths="./apis/..." output:crd:artifacts:config=crds

# Helm installs CRDs only from the chart's own crds/ directory; it ships the same file.
cp crds/zerowake.dev_scalerequests.yaml deploy/chart/zerowake/crds/
