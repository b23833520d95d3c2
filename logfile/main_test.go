package logfile

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks every test for leaked goroutines. When the test binary is
// started as a helper process by a test (see helpers_test.go), it runs that
// helper instead of the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	goleak.VerifyTestMain(m)
}
