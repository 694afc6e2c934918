//go:build tools

// Package tools pins the promtool that tests/env/install builds.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
