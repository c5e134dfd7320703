package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// toolCase runs a real tool on the target, then verifies its result again after
// the target is remounted with an empty cache (so everything comes from the cloud).
type toolCase struct {
	name   string
	run    func(t *testing.T, dir string)
	verify func(t *testing.T, dir string)
}

func TestRealTools(t *testing.T) {
	needTool(t, "rsync", "tar", "git", "sqlite3", "fio", "diff", "cp")
	// No user or system git config (HOME stays: go build needs its caches).
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	src := makeSourceTree(t)
	srcSnap := snapshot(t, src)
	t.Logf("source tree: %d names", len(srcSnap))

	forEachTarget(t, nil, func(t *testing.T, tg *target) {
		cases := []toolCase{
			rsyncCase(src, srcSnap),
			tarCase(src, srcSnap),
			gitCase(src),
			sqliteCase(),
			fioCase(),
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				d := filepath.Join(tg.dir, c.name)
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				c.run(t, d)
			})
		}
		tg.remount(t) // here, not in a subtest: if it fails, nothing below runs
		for _, c := range cases {
			t.Run(c.name+"-after-remount", func(t *testing.T) { c.verify(t, filepath.Join(tg.dir, c.name)) })
		}
	})
}

// makeSourceTree copies two Go source directories (about 1,900 files) and adds
// hard links, symlinks, xattrs, odd modes and owners, an empty dir, a big file.
func makeSourceTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT (the tree copies Go's own sources): %v", err)
	}
	goroot := strings.TrimSpace(string(out))
	for _, d := range []string{"src/cmd/go", "src/net"} {
		run(t, "", "cp", "-a", filepath.Join(goroot, d), src)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// GOROOT files may be read-only; make the copies writable by the owner.
	must(filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.Chmod(p, info.Mode().Perm()|0o200)
	}))
	x := filepath.Join(src, "extra")
	must(os.MkdirAll(filepath.Join(x, "empty-dir"), 0o755))
	must(os.MkdirAll(filepath.Join(x, "links"), 0o755))
	for i := range 10 {
		f := filepath.Join(x, fmt.Sprintf("file-%d", i))
		must(os.WriteFile(f, pattern(uint64(100+i), 1000*i), 0o644))
		must(os.Link(f, filepath.Join(x, "links", fmt.Sprintf("hard-%d", i))))
		if i%3 == 0 {
			must(os.Link(f, filepath.Join(x, fmt.Sprintf("hard-again-%d", i))))
		}
		must(unix.Setxattr(f, "user.index", []byte(fmt.Sprint(i)), 0))
		must(unix.Setxattr(f, "user.binary", pattern(uint64(i), 100), 0))
	}
	must(unix.Setxattr(x, "user.on-dir", []byte("dir attr"), 0))
	must(os.Symlink("../file-1", filepath.Join(x, "links", "sym-rel")))
	must(os.Symlink("/nonexistent/absolute", filepath.Join(x, "links", "sym-dangling")))
	must(os.Symlink("../../net", filepath.Join(x, "links", "sym-dir")))
	must(os.WriteFile(filepath.Join(x, "big"), pattern(999, 5<<20+123), 0o644))
	must(os.WriteFile(filepath.Join(x, "odd\nname \xff ü"), []byte("odd"), 0o644))
	for name, mode := range map[string]os.FileMode{"file-1": 0o600, "file-2": 0o755, "file-3": 0o640, "file-4": 0o444} {
		must(os.Chmod(filepath.Join(x, name), mode))
	}
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(x, "file-5"), 1000, 1000))
		must(os.Lchown(filepath.Join(x, "links", "sym-rel"), 1001, 1002))
	}
	// Old, distinct timestamps with nanoseconds: rsync leaves a symlink's fresh
	// mtime alone when it falls in the same second as the source's.
	i := int64(0)
	must(filepath.WalkDir(x, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		i++
		ts := unix.Timespec{Sec: 1_100_000_000 + i*1000, Nsec: 123_456_789 + i}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return src
}

func rsyncCase(src string, srcSnap map[string]entry) toolCase {
	opts := snapOpts{owners: true, mtimes: true}
	return toolCase{
		name: "rsync",
		run: func(t *testing.T, d string) {
			in, out := filepath.Join(d, "tree"), filepath.Join(t.TempDir(), "out")
			run(t, "", "rsync", "-aHAX", src+"/", in+"/")
			requireSameTree(t, "rsync into the mount", srcSnap, snapshot(t, in), opts)
			// A second, checksumming pass must find nothing to do.
			if got := run(t, "", "rsync", "-aHAXc", "--dry-run", "--itemize-changes", src+"/", in+"/"); strings.TrimSpace(got) != "" {
				t.Fatalf("second rsync -c pass wants changes:\n%s", got)
			}
			run(t, "", "rsync", "-aHAX", in+"/", out+"/")
			run(t, "", "diff", "-r", "--no-dereference", src, out)
			requireSameTree(t, "rsync back out of the mount", srcSnap, snapshot(t, out), opts)
		},
		verify: func(t *testing.T, d string) {
			requireSameTree(t, "rsync tree after remount", srcSnap, snapshot(t, filepath.Join(d, "tree")), opts)
			out := filepath.Join(t.TempDir(), "out")
			run(t, "", "rsync", "-aHAX", filepath.Join(d, "tree")+"/", out+"/")
			run(t, "", "diff", "-r", "--no-dereference", src, out)
		},
	}
}

func tarCase(src string, srcSnap map[string]entry) toolCase {
	opts := snapOpts{owners: true, mtimes: true}
	tarFlags := []string{"--format=posix", "--xattrs", "--xattrs-include=user.*"}
	return toolCase{
		name: "tar",
		run: func(t *testing.T, d string) {
			archive, x := filepath.Join(d, "a.tar"), filepath.Join(d, "x")
			run(t, "", "tar", append(append([]string{"-cf", archive}, tarFlags...), "-C", src, ".")...)
			if err := os.Mkdir(x, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, "", "tar", append(append([]string{"-xpf", archive}, tarFlags...), "-C", x)...)
			requireSameTree(t, "tar extracted in the mount", srcSnap, snapshot(t, x), opts)
		},
		verify: func(t *testing.T, d string) {
			requireSameTree(t, "tar-extracted tree after remount", srcSnap, snapshot(t, filepath.Join(d, "x")), opts)
			out := t.TempDir()
			run(t, "", "tar", append(append([]string{"-xpf", filepath.Join(d, "a.tar")}, tarFlags...), "-C", out)...)
			requireSameTree(t, "archive from the mount extracted locally", srcSnap, snapshot(t, out), opts)
		},
	}
}

func gitCase(src string) toolCase {
	git := func(t *testing.T, repo string, args ...string) string {
		t.Helper()
		base := []string{"-c", "user.name=kumo e2e", "-c", "user.email=e2e@kumo.invalid", "-c", "core.fsync=all",
			"-c", "init.defaultBranch=main", "-c", "gc.auto=0"}
		return run(t, repo, "git", append(base, args...)...)
	}
	check := func(t *testing.T, repo string, commits int) {
		t.Helper()
		git(t, repo, "fsck", "--full", "--strict", "--no-dangling")
		if st := git(t, repo, "status", "--porcelain"); strings.TrimSpace(st) != "" {
			t.Fatalf("git status not clean:\n%s", st)
		}
		if n := strings.Count(git(t, repo, "log", "--format=%H"), "\n"); n != commits {
			t.Fatalf("git log shows %d commits, want %d", n, commits)
		}
	}
	return toolCase{
		name: "git",
		run: func(t *testing.T, d string) {
			repo := filepath.Join(d, "repo")
			git(t, d, "init", "-q", repo)
			run(t, "", "cp", "-a", filepath.Join(src, "net"), filepath.Join(src, "extra"), repo)
			git(t, repo, "add", "-A")
			git(t, repo, "commit", "-q", "-m", "first")
			check(t, repo, 1)
			if err := os.WriteFile(filepath.Join(repo, "net", "net.go"), []byte("package net // changed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(repo, "net", "ip.go"), filepath.Join(repo, "ip-moved.go")); err != nil {
				t.Fatal(err)
			}
			if st := git(t, repo, "status", "--porcelain"); !strings.Contains(st, "net/net.go") || !strings.Contains(st, "ip-moved.go") {
				t.Fatalf("git status misses the changes:\n%s", st)
			}
			git(t, repo, "add", "-A")
			git(t, repo, "commit", "-q", "-m", "second")
			git(t, repo, "gc", "-q", "--prune=now")
			check(t, repo, 2)
		},
		verify: func(t *testing.T, d string) {
			repo := filepath.Join(d, "repo")
			check(t, repo, 2)
			clone := filepath.Join(t.TempDir(), "clone")
			git(t, "", "clone", "-q", repo, clone)
			run(t, "", "diff", "-r", "--no-dereference", "--exclude=.git", "--exclude=empty-dir", repo, clone)
		},
	}
}

func sqliteCase() toolCase {
	const query = "PRAGMA integrity_check; SELECT count(*), sum(id), sum(length(v)), count(DISTINCT s) FROM t;"
	const want = "ok\n10000|50005000|2000000|10000\n"
	check := func(t *testing.T, db string) {
		t.Helper()
		if got := run(t, "", "sqlite3", db, query); got != want {
			t.Fatalf("%s: got %q, want %q", filepath.Base(db), got, want)
		}
	}
	return toolCase{
		name: "sqlite",
		run: func(t *testing.T, d string) {
			for _, mode := range []string{"delete", "wal"} {
				db := filepath.Join(d, mode+".db")
				var sql strings.Builder
				fmt.Fprintf(&sql, "PRAGMA journal_mode=%s;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, s TEXT);\nCREATE INDEX t_s ON t(s);\n", mode)
				// Ten transactions of 1,000 rows: many journal (or WAL) cycles.
				for i := range 10 {
					fmt.Fprintf(&sql, "BEGIN;\nWITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x < %d)\n"+
						"INSERT INTO t SELECT x, randomblob(200), 'row' || x FROM c;\nCOMMIT;\n", i*1000+1, (i+1)*1000)
				}
				sql.WriteString("UPDATE t SET s = 'upd' || id WHERE id % 7 = 0;\n")
				cmd := exec.Command("sqlite3", "-bail", db)
				cmd.Stdin = strings.NewReader(sql.String())
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("sqlite3 %s: %v\n%s", mode, err, out)
				}
				check(t, db)
			}
		},
		verify: func(t *testing.T, d string) {
			check(t, filepath.Join(d, "delete.db"))
			check(t, filepath.Join(d, "wal.db"))
		},
	}
}

func fioCase() toolCase {
	jobs := [][]string{
		{"--name=seq", "--filename=seq.dat", "--rw=write", "--bs=1M"},
		{"--name=rand", "--filename=rand.dat", "--rw=randwrite", "--bs=4k"},
	}
	common := []string{"--size=64M", "--ioengine=psync", "--verify=crc32c", "--randrepeat=1",
		"--end_fsync=1", "--group_reporting", "--output-format=terse"}
	fio := func(t *testing.T, d string, job []string, extra ...string) {
		t.Helper()
		args := append(append(append([]string{}, job...), common...), extra...)
		out := run(t, d, "fio", args...)
		// terse v3: field 5 is the error code
		if f := strings.Split(strings.TrimSpace(out), ";"); len(f) < 5 || f[4] != "0" {
			t.Fatalf("fio %s reported an error:\n%s", job[0], out)
		}
	}
	return toolCase{
		name: "fio",
		run: func(t *testing.T, d string) {
			for _, job := range jobs {
				fio(t, d, job, "--do_verify=1")
			}
		},
		verify: func(t *testing.T, d string) {
			for _, job := range jobs {
				fio(t, d, job, "--verify_only")
			}
		},
	}
}
