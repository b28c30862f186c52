//go:build !linux

// Command baton runs on Linux only: it needs SO_REUSEPORT groups, BPF
// socket steering, PR_SET_PDEATHSIG and SCM_CREDENTIALS.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "baton: %s is not supported; baton runs on Linux only\n", runtime.GOOS)
	os.Exit(1)
}
