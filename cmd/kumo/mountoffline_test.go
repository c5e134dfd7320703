package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMountSharesOffline: bob's mount showed the folder alice shares with
// him (Shared/Docs); mounted again while the server is down, it starts
// from its cache (the account id and the identity keys kept in the
// session) and shows the shared folder and his own files from what it
// holds; when the server is back, the folder is live: a file alice adds
// shows up. Before, kumo mount failed while the server was down
// ("account: ... is the server running?"), and a drive started without
// the cloud showed no Shared/NAME.
func TestMountSharesOffline(t *testing.T) {
	needFUSE(t)
	bin := buildKumo(t)
	data := t.TempDir()
	srv := serveAt(t, bin, data, "127.0.0.1:0")
	url := srv.url
	base := t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw alice", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw bob", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	// put runs cmd... LOCAL remote, LOCAL holding body.
	put := func(r *runner, body, remote string, cmd ...string) {
		t.Helper()
		src := filepath.Join(t.TempDir(), "in")
		if err := os.WriteFile(src, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r.ok(append(cmd, src, remote)...)
	}
	put(alice, "shared a\n", "/Docs/a.txt", "put")
	put(bob, "bob's own\n", "/mine.txt", "put")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	bob.ok("share", "accept", "alice@example.com/Docs")

	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(base, "cache")
	mount := func() {
		t.Helper()
		bob.ok("mount", "--server", url, "--cache-dir", cache, mnt)
	}
	t.Cleanup(func() { bob.run("unmount", "--force", mnt) })
	reads := func(p, want string) error {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			return err
		}
		if string(got) != want {
			return &mismatch{p, string(got), want}
		}
		return nil
	}
	mount()
	for p, want := range map[string]string{"Shared/Docs/a.txt": "shared a\n", "mine.txt": "bob's own\n"} {
		if err := reads(p, want); err != nil {
			t.Fatalf("online: %v", err)
		}
	}
	bob.ok("unmount", mnt)

	srv.stop()
	mount()
	for p, want := range map[string]string{"Shared/Docs/a.txt": "shared a\n", "mine.txt": "bob's own\n"} {
		if err := reads(p, want); err != nil {
			t.Fatalf("mounted while the server is down: %v", err)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, "Shared")); err != nil || len(ents) != 1 || ents[0].Name() != "Docs" {
		t.Fatalf("ls Shared while the server is down: %v %v", ents, err)
	}

	serveAt(t, bin, data, strings.TrimPrefix(url, "http://"))
	// The owner names its share by id (kumo shares).
	id := regexp.MustCompile(`(?m)^owned\s+([0-9a-f]{16})\s`).FindStringSubmatch(alice.ok("shares"))
	if id == nil {
		t.Fatal("kumo shares lists no owned share")
	}
	put(alice, "after the outage\n", id[1]+"/new.txt", "share", "put")
	end := time.Now().Add(90 * time.Second)
	for {
		err := reads("Shared/Docs/new.txt", "after the outage\n")
		if err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the shared folder once the server is back: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	bob.ok("unmount", mnt)
}

type mismatch struct{ path, got, want string }

func (m *mismatch) Error() string { return m.path + ": " + m.got + ", want " + m.want }
