//go:build tools

// Package tools pins the sops CLI that tests/env/install builds: the real
// decrypter our src/sops encryption is checked against (tests/sops_decrypt.rs).
package tools

import _ "github.com/getsops/sops/v3/cmd/sops"
