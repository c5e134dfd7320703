package hostile

import (
	"os/exec"
	"strings"
	"testing"
)

// The proxy is test code: the kumo binary must not link it.
func TestNotInTheBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "kumo/cmd/kumo").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "kumo/internal/hostile" {
			t.Fatal("kumo/cmd/kumo imports kumo/internal/hostile (test code only)")
		}
	}
	if !strings.Contains(string(out), "kumo/remote/session") {
		t.Fatalf("go list -deps printed no kumo package: %s", out)
	}
}
