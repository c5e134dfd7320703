package s3test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBinaryInCache: the versitygw that make test installs into the user
// cache is found with nothing on PATH or in GOPATH, and $KUMO_VERSITYGW
// (set by make test) names it exactly.
func TestBinaryInCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOPATH", t.TempDir())
	t.Setenv("KUMO_VERSITYGW", "")
	bin := filepath.Join(cache, "kumo-test", "bin", "versitygw-"+Version)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Binary(); got != bin {
		t.Fatalf("Binary() = %q, want the cached %q", got, bin)
	}
	other := filepath.Join(t.TempDir(), "vgw")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUMO_VERSITYGW", other)
	if got := Binary(); got != other {
		t.Fatalf("Binary() = %q, want $KUMO_VERSITYGW %q", got, other)
	}
	t.Setenv("KUMO_VERSITYGW", other+".missing")
	if got := Binary(); got != "" {
		t.Fatalf("Binary() = %q for a missing $KUMO_VERSITYGW, want none", got)
	}
}
