package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		ok    bool
	}{
		{"v2 limit", map[string]string{"memory.max": "536870912\n"}, 536870912, true},
		{"v2 unlimited", map[string]string{"memory.max": "max\n"}, 0, false},
		{"v1 limit", map[string]string{"memory/memory.limit_in_bytes": "268435456\n"}, 268435456, true},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"v2 wins over v1", map[string]string{"memory.max": "100", "memory/memory.limit_in_bytes": "200"}, 100, true},
		{"garbage", map[string]string{"memory.max": "lots"}, 0, false},
		{"no cgroup files", nil, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range c.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := cgroupMemoryLimit(root)
			if got != c.want || ok != c.ok {
				t.Errorf("cgroupMemoryLimit = %d, %v; want %d, %v", got, ok, c.want, c.ok)
			}
		})
	}
}
