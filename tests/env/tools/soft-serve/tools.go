//go:build tools

// Package tools pins the soft-serve git server that tests/env/install builds.
package tools

import _ "github.com/charmbracelet/soft-serve/cmd/soft"
