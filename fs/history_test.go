package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/remote/server"
)

// moment names a snapshot directory.
func moment(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// TestHistoryView: MNT/.kumo-history/TIME/ shows the tree as it was at TIME,
// read-only, never listed in the root; every one of 20 versions of a file
// reads back; a deleted tree is still there in the past.
func TestHistoryView(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	var times []time.Time
	for i := range 20 {
		if err := os.WriteFile(m.p("f.txt"), fmt.Appendf(nil, "version %d %s", i, strings.Repeat("x", i*1000)), 0o644); err != nil {
			t.Fatal(err)
		}
		m.flush()
		times = append(times, time.Now())
	}
	if err := os.MkdirAll(m.p("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.p("d/e/g"), []byte("deep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("e/g", m.p("d/link")); err != nil {
		t.Fatal(err)
	}
	m.flush()
	beforeRm := time.Now()
	if err := os.RemoveAll(m.p("d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.p("f.txt")); err != nil {
		t.Fatal(err)
	}
	m.flush()

	h := m.p(HistoryDirName)
	for i, at := range times {
		got, err := os.ReadFile(filepath.Join(h, moment(at), "f.txt"))
		want := fmt.Appendf(nil, "version %d %s", i, strings.Repeat("x", i*1000))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("version %d at %s: %v, %d bytes, want %d", i, moment(at), err, len(got), len(want))
		}
	}
	snap := filepath.Join(h, moment(beforeRm))
	if got, err := os.ReadFile(filepath.Join(snap, "d/e/g")); err != nil || string(got) != "deep" {
		t.Fatalf("deleted file in the past: %q %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(snap, "d/e/g")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode in the past: %v %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(snap, "d/link")); err != nil || target != "e/g" {
		t.Fatalf("symlink in the past: %q %v", target, err)
	}
	// Now the tree is empty, and the view is not in the root's listing.
	if _, err := os.Stat(filepath.Join(h, moment(time.Now()), "f.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted file now: %v", err)
	}
	names, err := os.ReadDir(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n.Name() == HistoryDirName {
			t.Fatal("the history view is listed in the root")
		}
	}
	// Its own listing names the changed hour(s).
	ents, err := os.ReadDir(h)
	if err != nil || len(ents) == 0 {
		t.Fatalf("history listing: %v %v", ents, err)
	}
	// Read-only.
	for what, err := range map[string]error{
		"create":  os.WriteFile(filepath.Join(snap, "new"), nil, 0o644),
		"write":   os.WriteFile(filepath.Join(snap, "d/e/g"), []byte("x"), 0o644),
		"mkdir":   os.Mkdir(filepath.Join(snap, "nd"), 0o755),
		"remove":  os.Remove(filepath.Join(snap, "d/e/g")),
		"rename":  os.Rename(filepath.Join(snap, "d/e/g"), filepath.Join(snap, "d/e/h")),
		"chmod":   os.Chmod(filepath.Join(snap, "d/e/g"), 0o644),
		"mkdir h": os.Mkdir(filepath.Join(h, "x"), 0o755),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s in a snapshot: %v, want EROFS", what, err)
		}
	}
	// A time before history began is not there; nor is nonsense.
	for _, name := range []string{moment(time.Now().Add(-48 * time.Hour)), "yesterday", moment(time.Now().Add(time.Hour))} {
		if _, err := os.Stat(filepath.Join(h, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want ENOENT", name, err)
		}
	}
	// The control file tells what history keeps.
	ctl, err := os.ReadFile(m.p(".kumo"))
	if err != nil || !strings.Contains(string(ctl), "kept for 1 days, back to") {
		t.Errorf(".kumo does not show history: %v\n%s", err, ctl)
	}
	// A name in the root cannot take the view's place.
	if err := os.Mkdir(m.p(HistoryDirName+"/../"+HistoryDirName), 0o755); err == nil {
		t.Error("mkdir of the reserved name succeeded")
	}
}
