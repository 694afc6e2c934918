//go:build tools

// Package tools pins the kubeconform CLI that tests/env/install builds.
package tools

import _ "github.com/yannh/kubeconform/cmd/kubeconform"
