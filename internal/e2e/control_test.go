package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestControlFile checks the virtual .kumo file (DESIGN §6): reachable by name,
// absent from readdir, a text and a JSON report, commands written to it.
func TestControlFile(t *testing.T) {
	tg := newKumoTarget(t)
	ctl := filepath.Join(tg.dir, ".kumo")
	if err := os.WriteFile(filepath.Join(tg.dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if names := readDirNames(t, tg.dir); slices.Contains(names, ".kumo") || slices.Contains(names, ".kumo.json") {
		t.Errorf("readdir of the root lists the control file: %q", names)
	}
	text, err := os.ReadFile(ctl)
	if err != nil || len(text) == 0 {
		t.Fatalf("read .kumo: %d bytes, %v", len(text), err)
	}
	raw, err := os.ReadFile(ctl + ".json")
	if err != nil {
		t.Fatalf("read .kumo.json: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Errorf(".kumo.json is not a JSON object: %v\n%s", err, raw)
	}
	if err := os.WriteFile(ctl, []byte("sync\n"), 0); err != nil {
		t.Errorf("write 'sync' to .kumo: %v", err)
	}
	if err := os.WriteFile(ctl, []byte("no-such-command\n"), 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("write of a bad command to .kumo: %v, want EINVAL", err)
	}
	if err := unix.Rename(filepath.Join(tg.dir, "f"), ctl); err == nil {
		t.Errorf("rename onto .kumo succeeded")
	}
	if err := unix.Unlink(ctl); err == nil {
		t.Errorf("unlink .kumo succeeded")
	}
	t.Logf(".kumo:\n%s", text)
}
