package main

import (
	"errors"
	"strings"
	"testing"

	"kumo/remote/api"
)

// TestExplainStaleGeneration: a write the cloud refused because the shared
// folder rotated to a new key generation while the command ran says to run
// the command again (it then loads the new keys), and still matches the code.
func TestExplainStaleGeneration(t *testing.T) {
	err := explain(&api.Error{Status: 409, Code: api.CodeStaleGeneration, Message: "record sealed under generation 1"}, nil)
	if !errors.Is(err, api.ErrStaleGeneration) || !strings.Contains(err.Error(), "run the command again") {
		t.Fatalf("explain: %v", err)
	}
}
