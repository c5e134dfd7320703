package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/internal/control"
)

// TestHistorySqlite: an sqlite database read back from .kumo-history, and
// restored through the control file, at a moment between two transactions
// passes integrity_check and holds exactly the first transaction's rows.
func TestHistorySqlite(t *testing.T) {
	needTool(t, "sqlite3")
	tg := newKumoTarget(t)
	db := filepath.Join(tg.dir, "app.db")
	run(t, "", "sqlite3", db, "create table t(x integer); begin; "+strings.Repeat("insert into t values (random());", 100)+" commit;")
	waitUploaded(t, tg.dir)
	between := time.Now()
	time.Sleep(20 * time.Millisecond)
	run(t, "", "sqlite3", db, "begin; "+strings.Repeat("insert into t values (random());", 100)+" delete from t where rowid <= 10; commit;")
	waitUploaded(t, tg.dir)
	check := func(p, what string) {
		t.Helper()
		if got := strings.TrimSpace(run(t, "", "sqlite3", p, "pragma integrity_check; select count(*) from t;")); got != "ok\n100" {
			t.Fatalf("%s: %q, want ok and 100 rows", what, got)
		}
	}
	snap := filepath.Join(tg.dir, ".kumo-history", between.UTC().Format(time.RFC3339Nano), "app.db")
	cp := filepath.Join(t.TempDir(), "app.db")
	run(t, "", "cp", snap, cp)
	check(cp, "the database copied from .kumo-history")

	cmd := "restore /app.db " + between.UTC().Format(time.RFC3339Nano) + " force\n"
	if err := os.WriteFile(filepath.Join(tg.dir, ".kumo"), []byte(cmd), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		s := controlStatus(t, tg.dir)
		if c := s.LastCommand; c != nil && strings.HasPrefix(c.Command, "restore") && !c.Running {
			if !c.OK {
				t.Fatalf("restore failed: %s", c.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restore not done after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := runErr("", "sqlite3", db, "pragma integrity_check; select count(*) from t;")
		if err == nil && strings.TrimSpace(out) == "ok\n100" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restored database in the mount: %q %v", out, err)
		}
	}
}

func controlStatus(t *testing.T, mnt string) control.Status {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, ".kumo.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s control.Status
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitUploaded waits until the drive has nothing left to upload.
func waitUploaded(t *testing.T, mnt string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(mnt, ".kumo"), []byte("sync\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		u := controlStatus(t, mnt).Uploads
		if u.Files == 0 && u.Ops == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("uploads not done after a minute: %+v", u)
		}
	}
}
