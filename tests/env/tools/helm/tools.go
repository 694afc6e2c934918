//go:build tools

// Package tools pins the helm CLI that tests/env/install builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
