package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kumo/internal/control"
	"kumo/remote/api"
)

// userRunner is a CLI user with its own config dir and a HOME without a mount.
func userRunner(t *testing.T, bin string) *runner {
	return &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw", "HOME=" + t.TempDir()}}
}

func statusJSON(t *testing.T, r *runner) control.Status {
	t.Helper()
	var st control.Status
	out := r.ok("status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func adminAccounts(t *testing.T, r *runner, mode ...string) map[string]api.AdminAccount {
	t.Helper()
	var l []api.AdminAccount
	out := r.ok(append([]string{"admin", "accounts", "--json"}, mode...)...)
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("admin accounts --json: %v\n%s", err, out)
	}
	m := map[string]api.AdminAccount{}
	for _, a := range l {
		m[a.Email] = a
	}
	return m
}

func TestCLIVouchersAdminBackup(t *testing.T) {
	bin := buildKumo(t)
	data := t.TempDir()
	p := serveAt(t, bin, data, "127.0.0.1:0", "--quota", "100MiB")
	tokFile := filepath.Join(data, "admin-token")
	if st, err := os.Stat(tokFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", st, err)
	}
	online := []string{"--server", p.url, "--admin-token-file", tokFile}
	op := &runner{t: t, bin: bin, env: []string{"HOME=" + t.TempDir(), "KUMO_CONFIG_DIR=" + t.TempDir()}}

	u := userRunner(t, bin)
	u.ok("signup", "--server", p.url, "--email", "user@example.com")
	other := userRunner(t, bin)
	other.ok("signup", "--server", p.url, "--email", "other@example.com")
	src := filepath.Join(t.TempDir(), "doc.bin")
	content := make([]byte, 3<<20+11)
	rand.Read(content)
	os.WriteFile(src, content, 0o644)
	u.ok("put", src, "/doc.bin")

	// Status from the API (no mount under HOME).
	st := statusJSON(t, u)
	if st.Account != "user@example.com" || st.Quota.Limit != 100<<20 || st.Quota.Used < int64(len(content)) || st.Server != p.url {
		t.Fatalf("status: %+v", st)
	}
	if txt := u.ok("status"); !strings.Contains(txt, "user@example.com") || !strings.Contains(txt, "of 100 MiB") {
		t.Fatalf("status text:\n%s", txt)
	}
	u.fails("not a mounted kumo drive", "status", t.TempDir())

	// A wrong admin token is refused with a pointer to the right one.
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte(strings.Repeat("0", 64)), 0o600)
	op.fails("admin token was refused", "admin", "accounts", "--server", p.url, "--admin-token-file", bad)
	op.fails("--data DIR", "admin", "accounts")
	// Offline mode while the server runs: refused by the directory lock.
	op.fails("is the server running", "admin", "accounts", "--data", data)

	codes := strings.Fields(op.ok(append([]string{"admin", "voucher", "create", "--quota", "1GiB", "--days", "30", "--count", "2"}, online...)...))
	if len(codes) != 2 || codes[0] == codes[1] {
		t.Fatalf("voucher codes: %q", codes)
	}

	// Redeem once: quota grows; again: refused, quota unchanged.
	if out := u.ok("redeem", codes[0]); !strings.Contains(out, "+1 GiB for 30 days") {
		t.Fatalf("redeem: %q", out)
	}
	want := int64(100<<20 + 1<<30)
	if st := statusJSON(t, u); st.Quota.Limit != want || st.Quota.PlanExpires == nil {
		t.Fatalf("quota after redeem: %+v", st.Quota)
	}
	u.fails("already redeemed", "redeem", codes[0])
	other.fails("already redeemed", "redeem", codes[0])
	u.fails("no such voucher", "redeem", "KUMO-NOT-A-CODE")
	if st := statusJSON(t, u); st.Quota.Limit != want {
		t.Fatalf("quota after refused redeems: %d, want %d", st.Quota.Limit, want)
	}
	// Two users redeem the second code at the same moment: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []*runner{u, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = r.run("redeem", codes[1])
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("concurrent redeem: %v / %v", errs[0], errs[1])
	}
	accts := adminAccounts(t, op, online...)
	total := accts["user@example.com"].QuotaLimit + accts["other@example.com"].QuotaLimit
	if len(accts) != 2 || total != 2*(100<<20)+2*(1<<30) {
		t.Fatalf("accounts after redeems: %+v", accts)
	}

	// Quota and disable over HTTP.
	op.ok(append([]string{"admin", "quota", "--email", "other@example.com", "--limit", "5MiB"}, online...)...)
	if a := adminAccounts(t, op, online...)["other@example.com"]; a.QuotaLimit != 5<<20+accts["other@example.com"].QuotaLimit-100<<20 {
		t.Fatalf("quota after admin quota: %+v", a)
	}
	op.fails("no such account", append([]string{"admin", "quota", "--email", "nobody@example.com", "--limit", "1GiB"}, online...)...)
	op.ok(append([]string{"admin", "disable", "--email", "other@example.com"}, online...)...)
	other.fails("disabled", "ls", "/")
	if !adminAccounts(t, op, online...)["other@example.com"].Disabled {
		t.Fatal("account not shown disabled")
	}
	op.ok(append([]string{"admin", "disable", "--email", "other@example.com", "--enable"}, online...)...)
	other.ok("ls", "/")
	if out := op.ok(append([]string{"admin", "accounts"}, online...)...); !strings.Contains(out, "user@example.com") || !strings.Contains(out, "active") {
		t.Fatalf("admin accounts:\n%s", out)
	}

	// Online backup, then offline admin once the server is stopped.
	backup := filepath.Join(t.TempDir(), "meta.backup")
	op.ok(append([]string{"admin", "backup", "--out", backup}, online...)...)
	p.stop()
	offline := []string{"--data", data}
	op.ok(append([]string{"admin", "disable", "--email", "other@example.com"}, offline...)...)
	if a := adminAccounts(t, op, offline...); !a["other@example.com"].Disabled || len(a) != 2 {
		t.Fatalf("offline accounts: %+v", a)
	}
	if c := strings.Fields(op.ok(append([]string{"admin", "voucher", "create", "--quota", "2GiB"}, offline...)...)); len(c) != 1 {
		t.Fatalf("offline voucher: %q", c)
	}
	backupDir := t.TempDir()
	if out := op.ok(append([]string{"admin", "backup", backupDir}, offline...)...); !strings.Contains(out, backupDir) {
		t.Fatalf("offline backup: %s", out)
	}

	// Restore the online backup into a fresh data dir (chunks copied by the
	// operator, as the restore message says), serve it, and the user's
	// session, files and quota are all back.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if out := op.ok("admin", "restore", "--in", backup, "--data", fresh); !strings.Contains(out, "blobs") {
		t.Fatalf("restore: %s", out)
	}
	op.fails("fresh data directory", "admin", "restore", "--in", backup, "--data", fresh)
	if out, err := exec.Command("cp", "-a", filepath.Join(data, "blobs"), filepath.Join(fresh, "blobs")).CombinedOutput(); err != nil {
		t.Fatalf("cp blobs: %v %s", err, out)
	}
	p2 := serveAt(t, bin, fresh, strings.TrimPrefix(p.url, "http://"))
	if p2.url != p.url {
		t.Fatalf("restarted on %s, want %s", p2.url, p.url)
	}
	dst := filepath.Join(t.TempDir(), "doc.bin")
	u.ok("get", "/doc.bin", dst)
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, content) {
		t.Fatalf("file after restore: %d bytes", len(b))
	}
	u.ok("login", "--server", p.url, "--email", "user@example.com")
	if st := statusJSON(t, u); st.Quota.Limit < want {
		t.Fatalf("quota after restore: %+v", st.Quota)
	}
	// The backup was taken before other@ was disabled offline.
	other.ok("ls", "/")
	u.fails("already redeemed", "redeem", codes[0])
}

// With a mount, status prints the drive's own control files (here a stand-in
// directory; the drive's tests cover the real files), also for ~/Kumo.
func TestStatusReadsControlFile(t *testing.T) {
	bin := buildKumo(t)
	home := t.TempDir()
	mnt := filepath.Join(home, "Kumo")
	os.Mkdir(mnt, 0o755)
	os.WriteFile(filepath.Join(mnt, control.FileText), []byte("text report\n"), 0o644)
	os.WriteFile(filepath.Join(mnt, control.FileJSON), []byte("{\"schema\":1}\n"), 0o644)
	r := &runner{t: t, bin: bin, env: []string{"HOME=" + home, "KUMO_CONFIG_DIR=" + t.TempDir()}}
	if out := r.ok("status", mnt); out != "text report\n" {
		t.Fatalf("status MOUNTPOINT: %q", out)
	}
	if out := r.ok("status", mnt, "--json"); out != "{\"schema\":1}\n" {
		t.Fatalf("status MOUNTPOINT --json: %q", out)
	}
	if out := r.ok("status"); out != "text report\n" {
		t.Fatalf("status (default ~/Kumo): %q", out)
	}
	os.RemoveAll(mnt)
	r.fails("not logged in", "status")
}
