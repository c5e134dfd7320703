package cache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

const childEnv = "KUMO_CACHE_CRASH_CHILD"

// segPattern is deterministic content both processes can compute.
func segPattern(node uint64, i int64, n int) []byte {
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(uint64(j)*31 + uint64(i)*7 + node)
	}
	return p
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// crashChild is the child process of TestKill9: it writes, syncs, says
// "synced", keeps writing unsynced data, and waits to be killed.
func crashChild(dir string) {
	s, err := Open(Options{Dir: dir, Key: testKey()})
	must(err)
	for n := uint64(10); n < 13; n++ {
		f, err := s.OpenSegmentFile(n, 1)
		must(err)
		for i := int64(0); i < 20; i++ {
			must(f.WriteSegment(i, segPattern(n, i, chunk.SegmentSize-int(i))))
		}
		must(f.Sync())
	}
	// Small: fsync'd through the redo log (s.Sync below flushes it); the
	// reopened store replays it into the file.
	g, err := s.OpenSegmentFile(13, 1)
	must(err)
	for i := int64(0); i < 3; i++ {
		must(g.WriteSegment(i, segPattern(13, i, 3000+int(i))))
	}
	must(g.Sync())
	for i := 0; i < 50; i++ {
		must(s.Apply(Mutation{
			PutNodes:   []api.Node{{ID: uint64(100 + i), Type: api.TypeFile, Attrs: []byte{byte(i)}}},
			PutEntries: []Entry{{Parent: 1, NameMAC: mac(i), Name: []byte{byte(i)}, Child: uint64(100 + i)}},
			Journal:    []api.BatchOp{op(i)},
			Cursor:     u64p(uint64(i)),
		}))
	}
	must(s.Sync())
	fmt.Println("synced")
	// Unsynced work in flight when the kill lands: must not break what was synced.
	f, err := s.OpenSegmentFile(10, 1)
	must(err)
	for i := int64(0); ; i++ {
		f.WriteSegment(100+i%50, segPattern(10, 100+i%50, 1000))
		s.Apply(Mutation{Journal: []api.BatchOp{op(int(1000 + i))}, Cursor: u64p(uint64(1000 + i))})
		time.Sleep(time.Millisecond)
	}
}

func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "synced" {
			ready = true
			break
		}
	}
	if !ready {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child died before syncing")
	}
	time.Sleep(100 * time.Millisecond) // let unsynced work run
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s := openTest(t, dir, 0)
	defer s.Close()
	for n := uint64(10); n < 13; n++ {
		f, err := s.OpenSegmentFile(n, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < 20; i++ {
			p, ok, err := f.ReadSegment(i)
			if err != nil || !ok || !bytes.Equal(p, segPattern(n, i, chunk.SegmentSize-int(i))) {
				t.Fatalf("node %d segment %d after kill -9: ok=%v err=%v", n, i, ok, err)
			}
		}
		f.Close()
	}
	checkSegments(t, s, 13, map[int64][]byte{0: segPattern(13, 0, 3000), 1: segPattern(13, 1, 3001), 2: segPattern(13, 2, 3002)})
	for i := 0; i < 50; i++ {
		if _, err := s.GetNode(uint64(100 + i)); err != nil {
			t.Fatalf("node %d after kill -9: %v", 100+i, err)
		}
		if e, err := s.Lookup(1, mac(i)); err != nil || e.Child != uint64(100+i) {
			t.Fatalf("entry %d after kill -9: %v", i, err)
		}
	}
	p, err := s.Pending(100)
	if err != nil || len(p) < 50 {
		t.Fatalf("journal after kill -9: %d ops, %v", len(p), err)
	}
	for i := 0; i < 50; i++ {
		if p[i].Seq != uint64(i+1) || p[i].Op.Create.ID != uint64(1000+i) {
			t.Fatalf("journal op %d after kill -9: %+v", i, p[i])
		}
	}
	if c, _ := s.Cursor(); c < 49 {
		t.Fatalf("cursor after kill -9: %d", c)
	}
	t.Logf("after kill -9: %d journal ops (50 synced)", len(p))
}

// TestCanary writes a canary through every input of the store, as the drive
// would (names and attrs sealed by the caller, plaintext data into segment
// files), then checks that no file under Dir contains it.
func TestCanary(t *testing.T) {
	const canary = "KUMO-CANARY-7f3a9c"
	dir := t.TempDir()
	s := openTest(t, dir, 8<<20)
	sealer := testSealer(t)
	name := sealer([]byte("secret-" + canary + ".txt"))
	attrs := sealer([]byte(`{"mode":420,"xattr":{"user.note":"` + canary + `"}}`))
	plain := bytes.Repeat([]byte(canary), chunk.SegmentSize/len(canary))
	err := s.Apply(Mutation{
		PutNodes:   []api.Node{{ID: 5, Type: api.TypeFile, Attrs: attrs}},
		PutEntries: []Entry{{Parent: 1, NameMAC: mac(5), Name: name, Child: 5}},
		Journal: []api.BatchOp{
			{Op: api.OpCreate, Create: &api.CreateRequest{Parent: 1, NameMAC: mac(5), Name: name, ID: 5, Type: api.TypeFile, Attrs: attrs}},
			{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: 1, SrcNameMAC: mac(5), DstParent: 1, DstNameMAC: mac(6), Name: name}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.OpenSegmentFile(5, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 40; i++ {
		if err := f.WriteSegment(i, plain[:len(plain)-int(i)]); err != nil {
			t.Fatal(err)
		}
	}
	f.WriteSegment(3, plain) // overwrite in place
	f.Drop(30)
	f.Sync()
	f.Close()
	if err := s.PutSegments(chunkID(1), 0, [][]byte{sealer(plain), sealer(plain[:100])}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// badger's value log and memtable are checked too (after Close they are on disk)
	files, sawMAC := 0, false
	for _, pat := range [][]byte{[]byte(canary), []byte(canary[:12]), []byte(mac(6))} {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			switch {
			case string(pat) == mac(6):
				sawMAC = sawMAC || bytes.Contains(b, pat)
			case bytes.Contains(b, pat):
				t.Errorf("canary %q found in %s", pat, path)
			}
			return nil
		})
	}
	// control: the grep does see what is stored in clear (a name MAC in a journal op)
	if files == 0 || !sawMAC {
		t.Fatalf("grep saw %d files, name MAC found: %v", files, sawMAC)
	}
	// and the data is all still there
	s = openTest(t, dir, 8<<20)
	defer s.Close()
	f, _ = s.OpenSegmentFile(5, 1)
	defer f.Close()
	p, ok, err := f.ReadSegment(3)
	if err != nil || !ok || !bytes.Equal(p, plain) {
		t.Fatalf("segment 3: %v %v", ok, err)
	}
	if _, ok, err := f.ReadSegment(30); ok || err != nil {
		t.Fatalf("dropped segment 30: %v %v", ok, err)
	}
	if e, err := s.Lookup(1, mac(5)); err != nil || !bytes.Equal(e.Name, name) {
		t.Fatalf("entry: %v", err)
	}
	if _, err := s.GetNode(6); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 6: %v", err)
	}
}
