package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/tokengate/tokengate/e2e/harness"
)

// binDir holds tokengate and openai-mock, built once for every test that
// starts a stack.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tokenlab-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if _, err := harness.BuildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}
