package framework

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// BuildGate builds cmd/zerowake-gate into dir and returns the binary's path. The gate takes the
// same --kubeconfig, --ops-address and logging flags as the controller, so StartController
// runs it too (pass its --address in Args).
func BuildGate(ctx context.Context, dir string) (string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	binary := filepath.Join(dir, "zerowake-gate")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/zerowake-gate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the gate: %v\n%s", err, out)
	}
	return binary, nil
}
