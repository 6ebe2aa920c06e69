#!/usr/bin/env bash
# Cuts a release from the current tree, with Go tools only (no container engine).
#
#   hack/release.sh set-version vX.Y.Z   point deploy/, deploy/gate/ and the chart at vX.Y.Z (then commit and tag)
#   VERSION=vX.Y.Z hack/release.sh       write the release bundle to $RELEASE_DIR
#
# The bundle (default _output/release/VERSION) holds:
#   image/NAME/oci/                    the image index of NAME (zerowake-controller, zerowake-gate) for
#                                      linux/amd64 and linux/arm64, an OCI layout
#   image/NAME/digest                  its digest
#   image/NAME/sbom-linux-*.spdx.json  SPDX SBOMs: the Go modules in each platform's binary
#   zerowake-crds.yaml                 crds/, rendered
#   zerowake.yaml                      deploy/, rendered, with the controller image pinned by digest
#   zerowake-gate.yaml                 deploy/gate/, rendered, with the gate image pinned by digest
#   zerowake-gate-all-namespaces.yaml  deploy/gate-all-namespaces/, the same
#   kubectl-zerowake_VERSION_OS_ARCH.tar.gz   the kubectl plugin for linux and darwin, amd64 and arm64
#   krew/zerowake.yaml                 a krew plugin manifest pointing at those archives
#   checksums.txt                      sha256 of every file above
#
# Environment: IMAGE_PUSH=registry/prefix also pushes the images as PREFIX/NAME:VERSION;
# RELEASE_URL is where the archives will be downloadable (krew needs it); SOURCE_DATE_EPOCH
# defaults to the commit time.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
image_name=ghcr.io/zerowake/zerowake-controller
gate_image_name=ghcr.io/zerowake/zerowake-gate
deploy_kustomization=deploy/base/kustomization.yaml
gate_kustomization=deploy/gate/kustomization.yaml
chart=deploy/chart/zerowake/Chart.yaml

die() { echo "release: $*" >&2; exit 1; }
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

check_semver() {
	[[ $1 =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "version $1 is not vMAJOR.MINOR.PATCH[-PRERELEASE]"
}

# kustomization_tag FILE prints the newTag FILE sets (each kustomization names one image).
kustomization_tag() { awk '$1 == "newTag:" {print $2}' "$1"; }
chart_app_version() { awk '$1 == "appVersion:" {print $2}' "$chart"; }

set_version() {
	local v=$1
	check_semver "$v"
	sed -i "s|^\(  newTag:\) .*|\1 $v|" "$deploy_kustomization" "$gate_kustomization"
	sed -i "s|^appVersion: .*|appVersion: $v|; s|^version: .*|version: ${v#v}|" "$chart"
	echo "deploy/, deploy/gate/ and the chart now name $image_name:$v and $gate_image_name:$v; commit, then tag $v" >&2
}

# check_manifests_name VERSION fails unless deploy/, deploy/gate/ and the chart all name VERSION.
check_manifests_name() {
	local v=$1 d g c
	d=$(kustomization_tag "$deploy_kustomization") g=$(kustomization_tag "$gate_kustomization") c=$(chart_app_version)
	[ "$d" = "$v" ] && [ "$g" = "$v" ] && [ "$c" = "$v" ] ||
		die "deploy/ names $d, deploy/gate/ $g and the chart $c, not $v: run hack/release.sh set-version $v, commit and tag"
}

# pin_manifests KUSTOMIZATION IMAGE DIGEST OUT renders KUSTOMIZATION (a directory of the
# repository) into OUT with IMAGE pinned at DIGEST, through an overlay beside the repository's
# deploy/; kustomize keeps the name.
pin_manifests() {
	local kustomization=$1 image=$2 digest=$3 out=$4 overlay
	mkdir -p _output
	overlay=$(mktemp -d "$root/_output/.pin.XXXXXX")
	cat >"$overlay/kustomization.yaml" <<-EOF
		apiVersion: kustomize.config.k8s.io/v1beta1
		kind: Kustomization
		resources:
		- ../../$kustomization
		images:
		- name: $image
		  digest: $digest
	EOF
	"$kubectl" kustomize "$overlay" >"$out"
	rm -rf "$overlay"
}

# tar_gz DIR ARCHIVE packs DIR's files reproducibly: sorted, fixed owner and time, no gzip name or time.
tar_gz() {
	tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w \
		--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-C "$1" -cf - . | gzip -9 -n >"$2"
}

bundle() {
	local version=${VERSION:?set VERSION, e.g. VERSION=v0.2.0}
	check_semver "$version"
	check_manifests_name "$version"
	local out=${RELEASE_DIR:-$root/_output/release/$version}
	local url=${RELEASE_URL:-https://github.com/zerowake/zerowake/releases/download/$version}
	epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
	export SOURCE_DATE_EPOCH=$epoch
	rm -rf "$out"
	mkdir -p "$out/krew"

	say "images $image_name:$version and $gate_image_name:$version"
	(cd hack/tools/image && go run . -root "$root" -version "$version" -out "$out/image" ${IMAGE_PUSH:+-push "$IMAGE_PUSH"}) >/dev/null
	local digest gate_digest
	digest=$(cat "$out/image/zerowake-controller/digest")
	gate_digest=$(cat "$out/image/zerowake-gate/digest")

	kubectl=$(hack/tools.sh path kubectl)
	[ -x "$kubectl" ] || hack/tools.sh kubernetes
	say "manifests, images pinned at $digest (controller) and $gate_digest (gate)"
	"$kubectl" kustomize crds >"$out/zerowake-crds.yaml"
	pin_manifests deploy "$image_name" "$digest" "$out/zerowake.yaml"
	pin_manifests deploy/gate "$gate_image_name" "$gate_digest" "$out/zerowake-gate.yaml"
	pin_manifests deploy/gate-all-namespaces "$gate_image_name" "$gate_digest" "$out/zerowake-gate-all-namespaces.yaml"

	say "kubectl-zerowake archives"
	local platforms="" os arch
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	for os in linux darwin; do
		for arch in amd64 arm64; do
			local dir=$work/${os}_$arch name=kubectl-zerowake_${version}_${os}_$arch.tar.gz
			mkdir -p "$dir"
			CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOAMD64=v1 GOARM64=v8.0 go build -trimpath -buildvcs=false \
				-ldflags "-s -w -buildid= -X github.com/zerowake/zerowake/internal/version.version=$version" \
				-o "$dir/kubectl-zerowake" ./cmd/kubectl-zerowake
			cp README.md "$dir/README.md"
			tar_gz "$dir" "$out/$name"
			platforms+=$(cat <<-EOF

				  - selector:
				      matchLabels:
				        os: $os
				        arch: $arch
				    uri: $url/$name
				    sha256: $(sha256sum "$out/$name" | cut -d' ' -f1)
				    bin: kubectl-zerowake
				    files:
				    - from: kubectl-zerowake
				      to: .
				    - from: README.md
				      to: .
			EOF
			)
		done
	done

	# krew's manifest format (krew.sigs.k8s.io/docs/developer-guide/plugin-manifest); the file
	# is named after the plugin, as krew requires.
	cat >"$out/krew/zerowake.yaml" <<-EOF
		apiVersion: krew.googlecontainertools.github.com/v1alpha2
		kind: Plugin
		metadata:
		  name: zerowake
		spec:
		  version: $version
		  homepage: https://github.com/zerowake/zerowake
		  shortDescription: Wake workloads scaled to zero
		  description: |
		    Signals demand for a workload at zero replicas through a zerowake ScaleRequest, so that
		    the zerowake controller scales it up, and optionally waits until it is ready:
		      kubectl zerowake wake deployment/web -n shop --wait --timeout 60s
		  platforms:$platforms
	EOF

	(cd "$out" && find . -type f ! -name checksums.txt | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum >checksums.txt)
	say "release $version in $out"
	echo "$out"
}

case "${1:-bundle}" in
set-version) set_version "${2:?usage: hack/release.sh set-version vX.Y.Z}" ;;
check-version) check_manifests_name "${2:?usage: hack/release.sh check-version vX.Y.Z}" ;;
bundle) bundle ;;
*) die "usage: hack/release.sh [bundle|set-version VERSION|check-version VERSION]" ;;
esac
