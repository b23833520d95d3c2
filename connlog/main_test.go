package connlog

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks every test for leaked goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
