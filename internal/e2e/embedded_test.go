package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mode is a file's permission bits, failing the test if it is missing.
func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestEmbeddedKeysInConfigDir: the embedded cloud's password and session
// (which holds the master key) live in the config dir (0600 files, 0700
// directories), never in the cloud dir; the mount says it uses the embedded
// cloud; mounting the same cloud twice names the mount that holds it.
func TestEmbeddedKeysInConfigDir(t *testing.T) {
	bin := needKumo(t)
	base := t.TempDir()
	cfg := filepath.Join(base, "config")
	env := []string{"KUMO_CONFIG_DIR=" + cfg}
	cloud, mnt := filepath.Join(base, "cloud"), filepath.Join(base, "mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	out, err := kumoCmd(t, bin, env, "mount", "--cloud-dir", cloud, "--cache-dir", filepath.Join(base, "cache"), mnt)
	if err != nil {
		t.Fatalf("kumo mount: %v\n%s", err, out)
	}
	t.Cleanup(func() { kumoCmd(t, bin, env, "unmount", "--force", mnt) })
	if !strings.Contains(out, "embedded cloud in "+cloud) {
		t.Errorf("the mount message does not say it uses the embedded cloud: %q", out)
	}
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o644))

	// Nothing in the cloud dir opens it: no password, no session.
	filepath.WalkDir(cloud, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.Contains(d.Name(), "password") || strings.Contains(d.Name(), "session")) {
			t.Errorf("%s is in the cloud dir", p)
		}
		return nil
	})
	id, err := os.ReadFile(filepath.Join(cloud, "embedded-id"))
	must(t, err)
	keys := filepath.Join(cfg, "embedded", strings.TrimSpace(string(id)))
	for _, p := range []string{cfg, filepath.Dir(keys), keys} {
		if m := mode(t, p); m != 0o700 {
			t.Errorf("%s: mode %o, want 700", p, m)
		}
	}
	for _, p := range []string{filepath.Join(keys, "password"), filepath.Join(keys, "session.json")} {
		if m := mode(t, p); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", p, m)
		}
	}

	// The same cloud at a second mount point: who holds it, not badger's lock.
	mnt2 := filepath.Join(base, "mnt2")
	must(t, os.MkdirAll(mnt2, 0o755))
	out, err = kumoCmd(t, bin, env, "mount", "--cloud-dir", cloud, "--cache-dir", filepath.Join(base, "cache2"), mnt2)
	if err == nil {
		kumoCmd(t, bin, env, "unmount", "--force", mnt2)
		t.Fatalf("the same cloud mounted twice: %s", out)
	}
	if !strings.Contains(out, "is already mounted at "+mnt+" (pid ") || strings.Contains(out, "directory lock") {
		t.Fatalf("second mount of the same cloud: %q", out)
	}
	out, err = kumoCmd(t, bin, env, "unmount", mnt)
	if err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
}

// TestEmbeddedKeysMoved: a cloud dir from before keeps its password and
// session in itself; the first mount moves them to the config dir and the
// drive opens as before.
func TestEmbeddedKeysMoved(t *testing.T) {
	bin := needKumo(t)
	base := t.TempDir()
	cloud, mnt := filepath.Join(base, "cloud"), filepath.Join(base, "mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	m := &kumoMount{bin: bin, cloud: cloud, cache: filepath.Join(base, "c1"), dir: mnt, env: []string{"KUMO_CONFIG_DIR=" + filepath.Join(base, "cfg1")}}
	m.start(t)
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("kept"), 0o644))
	m.unmount(t)
	// Put the keys back where an older kumo kept them, with no config dir.
	id, err := os.ReadFile(filepath.Join(cloud, "embedded-id"))
	must(t, err)
	keys := filepath.Join(base, "cfg1", "embedded", strings.TrimSpace(string(id)))
	must(t, os.Rename(filepath.Join(keys, "password"), filepath.Join(cloud, "local-password")))
	must(t, os.Rename(filepath.Join(keys, "session.json"), filepath.Join(cloud, "local-session.json")))
	must(t, os.Remove(filepath.Join(cloud, "embedded-id")))

	cfg := filepath.Join(base, "cfg2")
	n := &kumoMount{bin: bin, cloud: cloud, cache: filepath.Join(base, "c2"), dir: mnt, env: []string{"KUMO_CONFIG_DIR=" + cfg}}
	n.start(t)
	wantContent(t, filepath.Join(mnt, "f"), "kept")
	n.unmount(t)
	for _, old := range []string{"local-password", "local-session.json"} {
		if _, err := os.Stat(filepath.Join(cloud, old)); err == nil {
			t.Errorf("%s is still in the cloud dir", old)
		}
	}
	id, err = os.ReadFile(filepath.Join(cloud, "embedded-id"))
	must(t, err)
	if m := mode(t, filepath.Join(cfg, "embedded", strings.TrimSpace(string(id)), "password")); m != 0o600 {
		t.Errorf("moved password: mode %o", m)
	}
}

// TestEmbeddedPassword: with $KUMO_PASSWORD the embedded account is
// protected by it: no password is stored, and without the saved session
// (a copy of the cloud dir elsewhere) only the password opens it.
func TestEmbeddedPassword(t *testing.T) {
	bin := needKumo(t)
	base := t.TempDir()
	cloud, mnt := filepath.Join(base, "cloud"), filepath.Join(base, "mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	pw := "KUMO_PASSWORD=correct horse embedded"
	m := &kumoMount{bin: bin, cloud: cloud, cache: filepath.Join(base, "c1"), dir: mnt, env: []string{"KUMO_CONFIG_DIR=" + filepath.Join(base, "cfg1"), pw}}
	m.start(t)
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("mine"), 0o644))
	m.unmount(t)
	id, err := os.ReadFile(filepath.Join(cloud, "embedded-id"))
	must(t, err)
	if _, err := os.Stat(filepath.Join(base, "cfg1", "embedded", strings.TrimSpace(string(id)), "password")); err == nil {
		t.Errorf("a password is stored although the user gave one")
	}

	// Another config dir (the cloud dir copied elsewhere): no password, no way in.
	env := []string{"KUMO_CONFIG_DIR=" + filepath.Join(base, "cfg2")}
	out, err := kumoCmd(t, bin, env, "mount", "--cloud-dir", cloud, "--cache-dir", filepath.Join(base, "c2"), mnt)
	if err == nil {
		kumoCmd(t, bin, env, "unmount", "--force", mnt)
		t.Fatalf("mounted a password-protected embedded cloud without its password: %s", out)
	}
	if !strings.Contains(out, "protected by a password") {
		t.Fatalf("mount without the password: %q", out)
	}
	n := &kumoMount{bin: bin, cloud: cloud, cache: filepath.Join(base, "c3"), dir: mnt, env: []string{"KUMO_CONFIG_DIR=" + filepath.Join(base, "cfg3"), pw}}
	n.start(t)
	wantContent(t, filepath.Join(mnt, "f"), "mine")
	n.unmount(t)
}
