package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// memoryLimitFraction is the share of the container's memory limit given to the Go runtime as
// its soft limit; the rest covers what the runtime does not count (and its lag in returning
// freed pages).
const memoryLimitFraction = 0.85

// setMemoryLimit gives the Go runtime a soft memory limit below the container's hard one, so
// that a burst of wakes (a readiness watch per target) makes the garbage collector work harder
// instead of getting the process OOM-killed. An explicit GOMEMLIMIT wins.
func setMemoryLimit(logger logr.Logger, cgroupRoot string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, ok := cgroupMemoryLimit(cgroupRoot)
	if !ok {
		return
	}
	soft := int64(float64(limit) * memoryLimitFraction)
	debug.SetMemoryLimit(soft)
	logger.Info("Set the Go memory limit from the container's", "containerLimitBytes", limit, "goMemLimitBytes", soft)
}

// cgroupMemoryLimit reads the memory limit of this process's cgroup (v2, else v1) under root;
// ok is false when there is none.
func cgroupMemoryLimit(root string) (limit int64, ok bool) {
	for _, file := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			continue
		}
		value := strings.TrimSpace(string(data))
		if value == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(value, 10, 64)
		// cgroup v1 says "unlimited" with a number near MaxInt64.
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
