// Package version reports which release of zerowake a binary was built from.
package version

import "runtime/debug"

// version is stamped by the build (make build, make image, make release) with
// -ldflags "-X github.com/zerowake/zerowake/internal/version.version=$(git describe --tags --always --dirty)".
var version string

// Get returns the stamped version; for a binary built without the stamp, the module version
// that `go install …@vX.Y.Z` records, else "devel".
func Get() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}
