package mountpoint

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const sample = `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
45 22 0:40 / /tmp rw,nosuid,nodev shared:20 - tmpfs tmpfs rw
101 45 0:55 / /tmp/my\040drive rw,nosuid,nodev,relatime shared:60 - fuse.kumo kumo rw,user_id=0,group_id=0
102 101 0:56 / /tmp/my\040drive rw,relatime - tmpfs none rw
`

func TestLookup(t *testing.T) {
	cases := []struct {
		dir  string
		want Mount
		ok   bool
	}{
		{"/tmp/my drive", Mount{Dir: "/tmp/my drive", Type: "tmpfs", Source: "none"}, true}, // the top one
		{"/tmp", Mount{Dir: "/tmp", Type: "tmpfs", Source: "tmpfs"}, true},
		{"/tmp/other", Mount{}, false},
	}
	for _, c := range cases {
		got, ok, err := lookup(strings.NewReader(sample), c.dir)
		if err != nil || ok != c.ok || got != c.want {
			t.Errorf("lookup %q = %+v %v %v, want %+v %v", c.dir, got, ok, err, c.want, c.ok)
		}
	}
	m, _, _ := lookup(strings.NewReader(sample[:strings.Index(sample, "102 ")]), "/tmp/my drive")
	if !m.IsKumo() {
		t.Errorf("%+v is not seen as a kumo drive", m)
	}
	if _, _, err := lookup(strings.NewReader("1 2 3\n"), "/"); err == nil {
		t.Error("a malformed line was accepted")
	}
}

func TestLookupReal(t *testing.T) {
	m, ok, err := Lookup("/")
	if err != nil || !ok || m.Type == "" {
		t.Fatalf("/ = %+v %v %v", m, ok, err)
	}
	dir := t.TempDir()
	if _, ok, err := Lookup(dir); ok || err != nil {
		t.Fatalf("a plain directory is a mount point: %v %v", ok, err)
	}
}

// TestHolders: a process whose working directory or open file lies under a
// directory is named, with how it holds it; others are not.
func TestHolders(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	cmd := exec.Command("sleep", "30")
	cmd.Dir = filepath.Join(dir, "sub")
	must(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	f, err := os.Create(filepath.Join(dir, "open"))
	must(t, err)
	defer f.Close()
	sh := exec.Command("sh", "-c", "exec 7<\"$1\"; exec sleep 30", "sh", f.Name())
	must(t, sh.Start())
	defer func() { sh.Process.Kill(); sh.Wait() }()

	var hs []Process
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if hs = Holders(dir); len(hs) == 2 && len(hs[0].Uses)+len(hs[1].Uses) >= 2 && strings.Contains(hs[0].String()+hs[1].String(), "fd 7") {
			break
		}
	}
	var text []string
	for _, h := range hs {
		text = append(text, h.String())
	}
	all := strings.Join(text, "; ")
	for _, want := range []string{"sleep (pid " + strconv.Itoa(cmd.Process.Pid) + ": cwd)", "fd 7 (" + f.Name() + ")"} {
		if !strings.Contains(all, want) {
			t.Errorf("holders %q: missing %q", all, want)
		}
	}
	if h := Holders(dir + "-no"); len(h) != 0 {
		t.Errorf("holders of a sibling prefix: %v", h)
	}
}

func TestEntries(t *testing.T) {
	dir := t.TempDir()
	if n, err := Entries(dir, 3); err != nil || len(n) != 0 {
		t.Fatalf("empty: %v %v", n, err)
	}
	for _, f := range []string{"a", "b", "c", "d"} {
		must(t, os.WriteFile(filepath.Join(dir, f), nil, 0o600))
	}
	if n, err := Entries(dir, 3); err != nil || len(n) != 3 {
		t.Fatalf("four files: %v %v", n, err)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, l := range strings.Split(strings.TrimSpace(sample), "\n") {
		f.Add(l)
	}
	f.Add(`1 2 3 4 \0 5 - x`)
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parseLine(line)
		if err == nil && strings.ContainsAny(m.Dir, "\n") && !strings.Contains(line, `\012`) {
			t.Fatalf("newline from nowhere in %q", m.Dir)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
