#!/usr/bin/env bash
# Builds the binaries that the local control plane and code generation need, from the Go module
# proxy only, and caches them outside the repository, keyed by version, so later runs reuse them.
#
#   hack/tools.sh [all|kubernetes|etcd|kwok|caddy|nginx|node|codegen|lint|helm|crds]...   build what is missing
#   hack/tools.sh path NAME...                                            print where each NAME is (or will be)
#   hack/tools.sh shared-version-drift                                    print modules the project and hack/tools/kubernetes pin differently
#
# The cache lives in $ZEROWAKE_CACHE (default: ~/.cache/zerowake). Versions come from the small
# modules under hack/tools/ and from the project's go.mod, so there is one place to change each.
# Go programs are built with -trimpath and CGO_ENABLED=0 (runc, which links libseccomp, aside), as
# the Makefile builds the project, so that the Go build cache serves a package compiled once to
# every build that needs it.
# nginx is the exception: not a Go program, it comes from the Debian archive apt is configured with.
# `node` builds what a real node needs (kubelet, kube-proxy, containerd, runc, CNI plugins) and
# fetches the two Debian parts it cannot do without: libseccomp for runc, nft for kube-proxy.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ZEROWAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zerowake}

# module_version DIR MODULE prints MODULE's version as required by the go.mod in DIR.
module_version() {
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

kube_version=$(module_version "$root/hack/tools/kubernetes" k8s.io/kubernetes)
etcd_version=$(module_version "$root/hack/tools/etcd" go.etcd.io/etcd/server/v3)
kwok_version=$(module_version "$root/hack/tools/kubernetes" sigs.k8s.io/kwok)
helm_version=$(module_version "$root/hack/tools/kubernetes" helm.sh/helm/v3)
caddy_version=$(module_version "$root/hack/tools/caddy" github.com/caddyserver/caddy/v2)
controller_gen_version=v0.23.0
staticcheck_version=v0.8.2
# The CRDs that deploy/examples/ are checked against (e2e/examples): the Gateway API, Envoy
# Gateway's policies, Traefik's Kubernetes CRD provider, Istio's security API. Each comes from
# the module of its project, at the release named here.
gateway_api_version=v1.6.3
envoy_gateway_version=v1.9.1
traefik_version=v3.7.13
istio_api_version=v1.32.0
# The real node's runtime. The kubelet and kube-proxy come from the Kubernetes module above.
containerd_version=v2.4.2
runc_version=v1.5.3
cni_plugins_version=v1.10.0
cri_tools_version=v1.37.0
crds_key="gatewayapi-$gateway_api_version-envoygateway-$envoy_gateway_version-traefik-$traefik_version-istioapi-$istio_api_version"

dir_for() {
	case "$1" in
	kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy) echo "$cache/kubernetes-$kube_version" ;;
	containerd|containerd-shim-runc-v2|ctr) echo "$cache/containerd-$containerd_version" ;;
	runc) local v; v=$(debian_version libseccomp-dev) || return 1; echo "$cache/runc-$runc_version-libseccomp-$v" ;;
	bridge|host-local|loopback) echo "$cache/cni-plugins-$cni_plugins_version" ;;
	crictl) echo "$cache/cri-tools-$cri_tools_version" ;;
	pause) echo "$cache/pause-$(pause_key)" ;;
	nft) local v; v=$(debian_version nftables) || return 1; echo "$cache/nftables-$v" ;;
	etcd) echo "$cache/etcd-$etcd_version" ;;
	# Built against the Kubernetes libraries of hack/tools/kubernetes, not their own go.mod's.
	kwok) echo "$cache/kwok-$kwok_version-kubernetes-$kube_version" ;;
	helm) echo "$cache/helm-$helm_version-kubernetes-$kube_version" ;;
	caddy) echo "$cache/caddy-$caddy_version" ;;
	nginx) local v; v=$(nginx_version) || return 1; echo "$cache/nginx-$v" ;;
	controller-gen) echo "$cache/controller-gen-$controller_gen_version" ;;
	staticcheck) echo "$cache/staticcheck-$staticcheck_version" ;;
	crds) echo "$cache/crds-$crds_key" ;;
	*) echo "unknown tool $1" >&2; return 1 ;;
	esac
}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# build_into NAME MODULE_DIR PACKAGE [LDFLAGS] builds PACKAGE in MODULE_DIR as NAME, atomically, unless cached.
build_into() {
	local name=$1 moddir=$2 pkg=$3 ldflags=${4:-}
	local dir; dir=$(dir_for "$name")
	[ -x "$dir/$name" ] && return 0
	mkdir -p "$dir"
	say "building $name ($pkg) into $dir — the first time takes minutes; later runs reuse it"
	local start=$SECONDS
	(cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/.$name.tmp" "$pkg")
	mv "$dir/.$name.tmp" "$dir/$name"
	say "built $name in $((SECONDS - start))s"
}

# build_together LDFLAGS PACKAGE... builds the commands of hack/tools/kubernetes whose binaries
# are missing (each named after its package's last element) in one go build, which compiles the
# packages they share once and links them in parallel, then moves each into its directory.
build_together() {
	local ldflags=$1; shift
	local pkg names=() pkgs=()
	for pkg in "$@"; do
		local name=${pkg##*/}
		[ -x "$(dir_for "$name")/$name" ] && continue
		names+=("$name") pkgs+=("$pkg")
	done
	[ ${#pkgs[@]} -gt 0 ] || return 0
	say "building ${names[*]} (hack/tools/kubernetes) — the first time takes minutes; later runs reuse them"
	local start=$SECONDS
	mkdir -p "$cache"
	local tmp; tmp=$(mktemp -d "$cache/.build.XXXXXX")
	(cd "$root/hack/tools/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "${pkgs[@]}")
	local name
	for name in "${names[@]}"; do
		local dir; dir=$(dir_for "$name")
		mkdir -p "$dir"
		mv "$tmp/$name" "$dir/$name"
	done
	rm -rf "$tmp"
	say "built ${names[*]} in $((SECONDS - start))s"
}

# kube_ldflags are the version stamps of a Kubernetes release build.
kube_ldflags() {
	local v=${kube_version#v} pkg=k8s.io/component-base/version
	local major=${v%%.*} rest=${v#*.}
	local minor=${rest%%.*}
	echo "-X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
		"-X k8s.io/client-go/pkg/version.gitVersion=$kube_version -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
}

# kube_module_package COMMAND prints the package of a command of hack/tools/kubernetes.
kube_module_package() {
	case "$1" in
	kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
	helm) echo helm.sh/helm/v3/cmd/helm ;;
	*) echo "k8s.io/kubernetes/cmd/$1" ;;
	esac
}
kube_module_commands=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kwok helm)

# build_kube_module COMMAND... builds what is missing of the named commands of hack/tools/kubernetes:
# the Kubernetes ones first, in one go build with their version stamps, then kwok and helm (not
# stamped as Kubernetes), which reuse what the first build compiled.
build_kube_module() {
	local cmd kube=() others=()
	for cmd in "$@"; do
		case "$cmd" in
		kwok|helm) others+=("$(kube_module_package "$cmd")") ;;
		*) kube+=("$(kube_module_package "$cmd")") ;;
		esac
	done
	[ ${#kube[@]} -eq 0 ] || build_together "$(kube_ldflags)" "${kube[@]}"
	# helm version reports what it was built from only through these variables.
	local helm_pkg=helm.sh/helm/v3/internal/version
	[ ${#others[@]} -eq 0 ] || build_together "-X $helm_pkg.version=$helm_version -X $helm_pkg.gitTreeState=clean" "${others[@]}"
	case " $* " in *" kwok "*) kwok_stages ;; esac
}

build_etcd() { build_into etcd "$root/hack/tools/etcd" go.etcd.io/etcd/server/v3; }

# Caddy is the real proxy in front of the gate in its end-to-end tests and in the demo.
build_caddy() { build_into caddy "$root/hack/tools/caddy" github.com/caddyserver/caddy/v2/cmd/caddy; }

# nginx_version prints the version of Debian's nginx package that apt would fetch.
nginx_version() {
	local v
	v=$(apt-cache policy nginx 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
	if [ -z "$v" ] || [ "$v" = "(none)" ]; then
		echo "nginx: apt knows no nginx package (a Debian-based machine is needed; try apt-get update)" >&2
		return 1
	fi
	echo "$v"
}

# nginx runs the nginx example of docs/proxies.md in e2e/gate. The package's binary has
# auth_request built in and loads only shared libraries (libssl3, libpcre2-8, zlib, libcrypt);
# apt-get download fetches the package without installing it (no root needed) and dpkg-deb
# unpacks it here.
build_nginx() {
	local dir; dir=$(dir_for nginx)
	[ -x "$dir/nginx" ] && return 0
	local version; version=$(nginx_version)
	say "fetching nginx $version from the Debian archive into $dir"
	local tmp; tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q "nginx=$version" >&2)
	dpkg-deb -x "$tmp"/nginx_*.deb "$tmp/root"
	mkdir -p "$dir"
	cp "$tmp/root/usr/sbin/nginx" "$dir/.nginx.tmp"
	rm -rf "$tmp"
	mv "$dir/.nginx.tmp" "$dir/nginx"
}

# debian_version PACKAGE prints the version of PACKAGE that apt would fetch.
debian_version() {
	local v
	v=$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
	if [ -z "$v" ] || [ "$v" = "(none)" ]; then
		echo "$1: apt knows no such package (a Debian-based machine is needed; try apt-get update)" >&2
		return 1
	fi
	echo "$v"
}

# debian_unpack DIR PACKAGE... downloads the packages apt would install (without installing them)
# and unpacks them all into DIR.
debian_unpack() {
	local into=$1; shift
	local tmp; tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q "$@" >&2)
	local deb
	for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$into"; done
	rm -rf "$tmp"
}

# go_install NAME DIR MODULE@VERSION/PACKAGE [go install flags...] installs one command into DIR
# unless it is there, through a temporary GOBIN so that a half-built binary is never seen.
go_install() {
	local name=$1 dir=$2 pkg=$3; shift 3
	[ -x "$dir/$name" ] && return 0
	say "installing $name ($pkg) into $dir"
	local start=$SECONDS
	mkdir -p "$dir"
	local tmp; tmp=$(mktemp -d "$dir/.gobin.XXXXXX")
	GOBIN="$tmp" go install -trimpath "$@" "$pkg"
	mv "$tmp/$name" "$dir/$name"
	rm -rf "$tmp"
	say "installed $name in $((SECONDS - start))s"
}

# containerd and its runc shim are pure Go; the CRI plugin is built in. ctr imports images
# into it; crictl removes the node's pods through the CRI when the cluster stops.
build_containerd() {
	local dir; dir=$(dir_for containerd)
	local cmd
	for cmd in containerd containerd-shim-runc-v2 ctr; do
		CGO_ENABLED=0 go_install "$cmd" "$dir" "github.com/containerd/containerd/v2/cmd/$cmd@$containerd_version" \
			-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
	done
	CGO_ENABLED=0 go_install crictl "$(dir_for crictl)" "sigs.k8s.io/cri-tools/cmd/crictl@$cri_tools_version" -ldflags "-s -w"
}

# runc needs seccomp: the CRI gives every sandbox a seccomp profile, and a runc without seccomp
# refuses it. That is runc's one C dependency; Debian's libseccomp-dev supplies the static
# library, linked in so that runc runs on a host without libseccomp.
build_runc() {
	local dir; dir=$(dir_for runc)
	[ -x "$dir/runc" ] && return 0
	mkdir -p "$dir"
	local sysroot="$dir/.libseccomp"
	rm -rf "$sysroot" && mkdir -p "$sysroot"
	say "fetching libseccomp-dev from the Debian archive for runc"
	debian_unpack "$sysroot" "libseccomp-dev=$(debian_version libseccomp-dev)"
	local lib; lib=$(dirname "$(find "$sysroot" -name libseccomp.a | head -n1)")
	[ -n "$lib" ] && [ -f "$lib/libseccomp.a" ] || { echo "libseccomp-dev has no libseccomp.a" >&2; return 1; }
	# libseccomp-golang asks pkg-config; describe the unpacked copy, not the system's.
	mkdir -p "$sysroot/pkgconfig"
	cat >"$sysroot/pkgconfig/libseccomp.pc" <<-PC
	Name: libseccomp
	Description: unpacked from Debian for runc
	Version: $(debian_version libseccomp-dev | sed 's/-.*//')
	Cflags: -I$sysroot/usr/include
	Libs: -L$lib -l:libseccomp.a
	PC
	PKG_CONFIG_PATH="$sysroot/pkgconfig" CGO_ENABLED=1 go_install runc "$dir" \
		"github.com/opencontainers/runc@$runc_version" \
		-tags "seccomp netgo osusergo" -ldflags "-s -w -X main.version=${runc_version#v} -extldflags -static"
	rm -rf "$sysroot"
}

# The CNI plugins the node's pod network uses: a bridge with host-local addresses, and loopback.
build_cni() {
	local dir; dir=$(dir_for bridge)
	local plugin
	for plugin in bridge host-local loopback; do
		local kind=main
		[ "$plugin" = host-local ] && kind=ipam
		CGO_ENABLED=0 go_install "$plugin" "$dir" \
			"github.com/containernetworking/plugins/plugins/$kind/$plugin@$cni_plugins_version" -ldflags "-s -w"
	done
}

# kube-proxy (nftables mode) programs Services with the nft command: Debian's, with every
# library it loads beyond libc unpacked beside it (run it with LD_LIBRARY_PATH=DIR/lib), so that
# a minimal Debian without them works too.
build_nft() {
	local dir; dir=$(dir_for nft)
	[ -x "$dir/nft" ] && return 0
	local version; version=$(debian_version nftables)
	say "fetching nftables $version and its libraries from the Debian archive into $dir"
	local tmp="$dir.tmp.$$"
	rm -rf "$tmp" && mkdir -p "$tmp/root" "$tmp/lib"
	local pkgs=("nftables=$version") pkg
	for pkg in libnftables1 libnftnl11 libmnl0 libxtables12 libjansson4 libgmp10 libedit2 libbsd0 libmd0 libtinfo6; do
		pkgs+=("$pkg=$(debian_version "$pkg")")
	done
	debian_unpack "$tmp/root" "${pkgs[@]}"
	find "$tmp/root" -name '*.so*' \( -type f -o -type l \) -exec cp -a {} "$tmp/lib/" \;
	cp "$tmp/root/usr/sbin/nft" "$tmp/nft"
	rm -rf "$tmp/root"
	LD_LIBRARY_PATH="$tmp/lib" "$tmp/nft" --version >/dev/null
	mkdir -p "$(dirname "$dir")"
	rm -rf "$dir" && mv "$tmp" "$dir"
}

# pause_key names a build of the sandbox image after its sources and the assembler's.
pause_key() {
	cat "$root"/hack/pause/*.go "$root"/hack/tools/image/go.sum $(ls "$root"/hack/tools/image/*.go | grep -v _test.go) |
		sha256sum | cut -c1-16
}

# The sandbox ("pause") image that every pod of the real node starts with, as an OCI layout in
# DIR/pause (which is what `path pause` prints), assembled like the project's own images.
build_pause() {
	local dir; dir=$(dir_for pause)
	[ -f "$dir/pause/index.json" ] && return 0
	say "building the sandbox image (hack/pause) into $dir"
	local tmp; tmp=$(mktemp -d)
	(cd "$root/hack/tools/image" && go run . -root "$root" -version sandbox -out "$tmp/out" \
		-images pause -platforms linux/amd64 -source-date-epoch 0 >/dev/null)
	mkdir -p "$dir"
	rm -rf "$dir/pause" && mv "$tmp/out/pause/oci" "$dir/pause"
	rm -rf "$tmp"
}

build_node() {
	build_pause
	build_containerd
	build_runc
	build_cni
	build_nft
}

# kwok refuses to start without stages; keep the ones its release ships next to the binary.
kwok_stages() {
	local dir; dir=$(dir_for kwok)
	[ -d "$dir/stages" ] && return 0
	local src; src=$(cd "$root/hack/tools/kubernetes" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
	rm -rf "$dir/stages.tmp" && mkdir -p "$dir/stages.tmp"
	local stage
	for stage in node/fast node/heartbeat-with-lease pod/fast; do
		find "$src/kustomize/stage/$stage" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml \
			-exec cp {} "$dir/stages.tmp/" \;
	done
	chmod u+w "$dir/stages.tmp/"*
	mv "$dir/stages.tmp" "$dir/stages"
}

build_codegen() {
	local dir; dir=$(dir_for controller-gen)
	if [ ! -x "$dir/controller-gen" ]; then
		say "installing controller-gen $controller_gen_version into $dir"
		GOBIN="$dir" go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$controller_gen_version"
	fi
	# k8s.io/code-generator is a dependency of the project's module (tools.go); downloading it is enough.
	(cd "$root" && go mod download k8s.io/code-generator)
}

build_lint() {
	local dir; dir=$(dir_for staticcheck)
	if [ ! -x "$dir/staticcheck" ]; then
		say "installing staticcheck $staticcheck_version into $dir"
		GOBIN="$dir" go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
	fi
}

# module_dir MODULE VERSION downloads MODULE at VERSION into the module cache (a temporary module
# asks for it, so the project's go.mod is untouched) and prints where its files are.
module_dir() {
	local tmp; tmp=$(mktemp -d)
	local out
	out=$(cd "$tmp" && go mod init crds.local >/dev/null 2>&1 && go mod download -json "$1@$2")
	rm -rf "$tmp"
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$out"
}

# crd_document FILE NAME prints the document of the multi-document FILE that defines the CRD NAME.
crd_document() {
	awk -v want="  name: $2" '
		/^---/ { if (keep) printf "%s", doc; doc = ""; keep = 0; next }
		{ doc = doc $0 "\n"; if ($0 == want) keep = 1 }
		END { if (keep) printf "%s", doc }' "$1"
}

# The CRDs, only the files the examples need, in crds/<project>/ under the cache directory.
fetch_crds() {
	local dir; dir=$(dir_for crds)
	[ -d "$dir/crds" ] && return 0
	say "downloading the Gateway API, Envoy Gateway, Traefik and Istio modules for their CRDs into $dir (the first time takes minutes)"
	local start=$SECONDS
	mkdir -p "$dir"
	local tmp="$dir/.crds.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"/{gateway-api-standard,gateway-api-experimental,envoy-gateway,traefik,istio}
	local src kind
	src=$(module_dir sigs.k8s.io/gateway-api "$gateway_api_version")
	for kind in gatewayclasses gateways httproutes referencegrants; do
		cp "$src/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$tmp/gateway-api-standard/"
		cp "$src/config/crd/experimental/gateway.networking.k8s.io_$kind.yaml" "$tmp/gateway-api-experimental/"
	done
	src=$(module_dir github.com/envoyproxy/gateway "$envoy_gateway_version")
	for kind in securitypolicies backendtrafficpolicies; do
		cp "$src/charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_$kind.yaml" "$tmp/envoy-gateway/"
	done
	src=$(module_dir github.com/traefik/traefik/v3 "$traefik_version")
	for kind in middlewares ingressroutes; do
		cp "$src/docs/content/reference/dynamic-configuration/traefik.io_$kind.yaml" "$tmp/traefik/"
	done
	src=$(module_dir istio.io/api "$istio_api_version")
	crd_document "$src/kubernetes/customresourcedefinitions.gen.yaml" authorizationpolicies.security.istio.io \
		>"$tmp/istio/security.istio.io_authorizationpolicies.yaml"
	local f
	for f in "$tmp"/*/*.yaml; do
		[ -s "$f" ] || { echo "no CRD in $f" >&2; rm -rf "$tmp"; return 1; }
	done
	chmod -R u+w "$tmp"
	# Another run may have won the race: keep its copy.
	mv -T "$tmp" "$dir/crds" 2>/dev/null || rm -rf "$tmp"
	say "CRDs ready in $((SECONDS - start))s"
}

if [ "${1:-}" = path ]; then
	shift
	for name in "$@"; do
		dir=$(dir_for "$name")
		echo "$dir/$name"
	done
	exit 0
fi
# shared_version_drift prints the modules that both the project's build and hack/tools/kubernetes's
# commands compile but at different versions, one "MODULE PROJECT_VERSION TOOLS_VERSION" per
# line: each of them is compiled twice on a cold machine (see hack/tools/kubernetes/go.mod).
shared_version_drift() {
	local f='{{with .Module}}{{.Path}} {{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}{{end}}'
	local cmd pkgs=()
	for cmd in "${kube_module_commands[@]}"; do pkgs+=("$(kube_module_package "$cmd")"); done
	join <(cd "$root" && go list -deps -test -f "$f" ./... | sort -u) \
		<(cd "$root/hack/tools/kubernetes" && go list -deps -f "$f" "${pkgs[@]}" | sort -u) |
		awk 'NF == 3 && $2 != $3'
}
if [ "${1:-}" = shared-version-drift ]; then
	shared_version_drift
	exit 0
fi

# What was asked for, grouped by how it is built: the commands of hack/tools/kubernetes in one
# job, the other Go modules (etcd, Caddy) in a second, the real node's runtime in a third. The
# jobs run at the same time: each go build leaves a core idle at times (a large package that
# everything waits for, a link), which the others fill.
[ $# -eq 0 ] && set -- all
kube_cmds=() other_go=() node=0 serial=()
for what in "$@"; do
	case "$what" in
	all) kube_cmds+=(kube-apiserver kube-controller-manager kube-scheduler kubectl kwok) other_go+=(etcd caddy) ;;
	kubernetes) kube_cmds+=(kube-apiserver kube-controller-manager kube-scheduler kubectl) ;;
	kwok|helm) kube_cmds+=("$what") ;;
	etcd|caddy) other_go+=("$what") ;;
	node) kube_cmds+=(kubelet kube-proxy) node=1 ;;
	nginx|codegen|lint|crds) serial+=("$what") ;;
	*) echo "usage: $0 [all|kubernetes|etcd|kwok|caddy|nginx|node|codegen|lint|helm|crds]... | path NAME... | shared-version-drift" >&2; exit 2 ;;
	esac
done

jobs=()
[ ${#kube_cmds[@]} -eq 0 ] || { build_kube_module "${kube_cmds[@]}" & jobs+=($!); }
if [ ${#other_go[@]} -gt 0 ]; then
	(
		for what in "${other_go[@]}"; do "build_$what"; done
	) &
	jobs+=($!)
fi
[ "$node" = 0 ] || { build_node & jobs+=($!); }
if [ ${#serial[@]} -gt 0 ]; then
	(
		for what in "${serial[@]}"; do
			if [ "$what" = crds ]; then fetch_crds; else "build_$what"; fi
		done
	) &
	jobs+=($!)
fi
status=0
for job in "${jobs[@]}"; do
	wait "$job" || status=1
done
exit $status
