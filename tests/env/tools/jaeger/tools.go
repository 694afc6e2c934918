//go:build tools

// Package tools pins the Jaeger v2 binary (cmd/jaeger) that tests/env/install builds.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
