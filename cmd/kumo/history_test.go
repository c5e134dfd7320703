package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// rmrf removes the remote path p and everything below it (entries before
// their directory, like rm -rf), through the session in cfg.
func rmrf(t *testing.T, cfg, p string) {
	t.Helper()
	s, err := session.Load(filepath.Join(cfg, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	removeTree(t, pathops.New(cl, s.Subkeys()), cl.Unlink, p)
}

// removeTree unlinks p in fsys and everything below it, entries before
// their directory, each through unlink (a client: the own tree's or a
// share's).
func removeTree(t *testing.T, fsys *pathops.FS, unlink func(context.Context, api.UnlinkRequest) error, p string) {
	t.Helper()
	ctx := context.Background()
	var rm func(n *pathops.Node)
	rm = func(n *pathops.Node) {
		if n.IsDir() {
			kids, err := fsys.ListNode(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range kids {
				rm(k)
			}
		}
		if err := unlink(ctx, api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC, Dir: n.IsDir()}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := fsys.Resolve(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	rm(n)
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-05-01T09:30:00Z":      time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC),
		"2026-05-01T11:30:00+02:00": time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC),
		"2026-05-01T09:30:00.5Z":    time.Date(2026, 5, 1, 9, 30, 0, 5e8, time.UTC),
		"2h":                        now.Add(-2 * time.Hour),
		"3d":                        now.Add(-72 * time.Hour),
		" 90m ":                     now.Add(-90 * time.Minute),
	} {
		got, err := parseWhen(in, now)
		if err != nil || got != want.UnixNano() {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, time.Unix(0, got).UTC(), err, want)
		}
	}
	for _, bad := range []string{"", "0", "yesterday", "2026-05-01", "-2h", "2026-05-01 09:30:00"} {
		if _, err := parseWhen(bad, now); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
			t.Errorf("parseWhen(%q): %v", bad, err)
		}
	}
}

// TestCLIRestoreTrash drives kumo history, restore and trash through the
// built binary against kumo serve (history on by default).
func TestCLIRestoreTrash(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin, "--quota", "100MiB")
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=correct horse"}}
	r.ok("signup", "--server", url, "--email", "hist@example.com")

	src := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	v1 := make([]byte, 300<<10)
	rand.Read(v1)
	os.WriteFile(filepath.Join(src, "a.bin"), v1, 0o644)
	os.WriteFile(filepath.Join(src, "b.txt"), []byte("bee"), 0o600)
	os.WriteFile(filepath.Join(src, "sub", "c.txt"), []byte("sea"), 0o644)
	r.ok("put", "-r", src, "/")
	time.Sleep(20 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)

	// Later: a.bin rewritten, b.txt deleted, new.txt added.
	v2 := []byte("encrypted by someone else")
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "a.bin"), v2, 0o644)
	os.WriteFile(filepath.Join(other, "new.txt"), []byte("new"), 0o644)
	r.ok("put", filepath.Join(other, "a.bin"), "/docs/a.bin")
	r.ok("put", filepath.Join(other, "new.txt"), "/docs/new.txt")
	rmrf(t, cfg, "/docs/b.txt")

	if out := r.ok("history", "/docs/a.bin"); len(strings.Split(strings.TrimSpace(out), "\n")) != 3 || !strings.Contains(out, "307200") || !strings.Contains(out, " now ") {
		t.Fatalf("kumo history:\n%s", out)
	}

	// Without --force: the newer a.bin stays, the old one is a conflict copy.
	out := r.ok("restore", "/docs", "--at", at)
	if !strings.Contains(out, "1 conflict copies") {
		t.Fatalf("restore: %s", out)
	}
	ls := r.ok("ls", "/docs")
	if !strings.Contains(ls, "a (conflict ") || !strings.Contains(ls, "b.txt") || !strings.Contains(ls, "new.txt") {
		t.Fatalf("after restore:\n%s", ls)
	}
	// With --force: exactly as then.
	out = r.ok("restore", "/docs", "--at", at, "--force")
	if !strings.Contains(out, "1 updated") || !strings.Contains(out, "2 removed") {
		t.Fatalf("restore --force: %s", out)
	}
	dst := t.TempDir()
	r.ok("get", "-r", "/docs", dst)
	ents, _ := os.ReadDir(filepath.Join(dst, "docs"))
	if len(ents) != 3 {
		t.Fatalf("after restore --force: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "docs", "a.bin")); !bytes.Equal(b, v1) {
		t.Fatal("a.bin not restored")
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "docs", "b.txt")); string(b) != "bee" {
		t.Fatalf("b.txt: %q", b)
	}
	// --to: a copy elsewhere, by a duration.
	r.ok("restore", "/docs/sub", "--at", at, "--to", "/copy/sub")
	r.ok("get", "/copy/sub/c.txt", filepath.Join(dst, "c.copy"))
	if b, _ := os.ReadFile(filepath.Join(dst, "c.copy")); string(b) != "sea" {
		t.Fatalf("restore --to: %q", b)
	}

	// Trash: rm -rf of a directory, listed once, restored with its content.
	rmrf(t, cfg, "/docs/sub")
	out = r.ok("trash")
	if !regexp.MustCompile(`(?m) dir +- +/docs/sub$`).MatchString(out) || strings.Contains(out, "/docs/sub/c.txt") {
		t.Fatalf("kumo trash:\n%s", out)
	}
	out = r.ok("trash", "restore", "/docs/sub")
	if !strings.Contains(out, "restored /docs/sub") {
		t.Fatalf("trash restore: %s", out)
	}
	r.ok("get", "/docs/sub/c.txt", filepath.Join(dst, "c.back"))
	if b, _ := os.ReadFile(filepath.Join(dst, "c.back")); string(b) != "sea" {
		t.Fatalf("after trash restore: %q", b)
	}
	r.fails("nothing deleted at /docs/nope", "trash", "restore", "/docs/nope")

	// A moment older than the history says how far back it goes.
	r.fails("it goes back to", "restore", "/docs", "--at", "2000-01-01T00:00:00Z")
	r.fails("needs --at", "restore", "/docs")
	r.fails("RFC 3339", "restore", "/docs", "--at", "yesterday")

	if out := r.ok("history", "retention"); !strings.Contains(out, "kept 30 days") {
		t.Fatalf("retention: %s", out)
	}
	if out := r.ok("history", "retention", "12h"); !strings.Contains(out, "kept 12h0m0s") {
		t.Fatalf("retention 12h: %s", out)
	}
	if out := r.ok("status"); !strings.Contains(out, "history     ") || !strings.Contains(out, "kept for 0.5 days") {
		t.Fatalf("status: %s", out)
	}
	if out := r.ok("history", "purge", "/docs/a.bin"); !strings.Contains(out, "purged 2 versions") {
		t.Fatalf("purge: %s", out)
	}
	if out := r.ok("history", "purge", "--before", "1s"); !strings.Contains(out, "purged") {
		t.Fatalf("purge --before: %s", out)
	}
}
