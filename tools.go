//go:build tools

// Package tools pins code generators to the project's k8s.io version so `make generate` is reproducible.
package tools

import _ "k8s.io/code-generator"
