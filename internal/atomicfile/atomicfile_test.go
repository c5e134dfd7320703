package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWrite: the file is replaced whole with its mode, and no temporary
// file is left, also when the write fails.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := os.WriteFile(p, []byte("old contents, longer than the new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := Write(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("directory holds %d entries, want only state.json: %v", len(es), es)
	}
}

// TestWritePrivate: missing parents are created 0700, the file is 0600,
// and an existing file is replaced whole.
func TestWritePrivate(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "a", "b", "session.json")
	if err := WritePrivate(p, []byte("first, the longer one")); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivate(p, []byte("second")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "second" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", fi.Mode(), err)
	}
	for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: mode %v, %v; want 0700", d, fi.Mode(), err)
		}
	}
	es, err := os.ReadDir(filepath.Dir(p))
	if err != nil || len(es) != 1 {
		t.Fatalf("directory holds %v (%v), want only session.json", es, err)
	}
	// A parent that is a file: a clear error, nothing written.
	if err := os.WriteFile(filepath.Join(base, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivate(filepath.Join(base, "f", "x"), []byte("x")); err == nil {
		t.Fatal("a write under a regular file succeeded")
	}
}
