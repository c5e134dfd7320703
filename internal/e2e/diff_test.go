package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDifferential applies the same seeded random operations to the target and to
// a reference local directory, comparing every result, then compares the trees.
// Replay a failure with KUMO_DIFF_SEED=<seed printed in the log>.
func TestDifferential(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KUMO_DIFF_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KUMO_DIFF_SEED: %v", err)
		}
		seed = v
	}
	nops := 10_000
	if testing.Short() {
		nops = 2_000
	}
	forEachTarget(t, nil, func(t *testing.T, tg *target) {
		t.Logf("seed %d (replay: KUMO_DIFF_SEED=%d go test ./internal/e2e -run 'TestDifferential/%s')", seed, seed, tg.name)
		root := filepath.Join(tg.dir, "diff")
		ref := filepath.Join(t.TempDir(), "diff")
		for _, d := range []string{root, ref} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		g := &opGen{r: rand.New(rand.NewPCG(seed, 0x6b756d6f))}
		var history []string
		stats := map[string][2]int{} // op kind -> {succeeded, failed}
		start := time.Now()
		for i := range nops {
			if i%25 == 0 {
				g.refresh(ref)
			}
			op := g.next()
			history = append(history, fmt.Sprintf("#%d %s", i, op.desc))
			if len(history) > 25 {
				history = history[1:]
			}
			gotOut, gotErr := op.do(root)
			wantOut, wantErr := op.do(ref)
			kind, _, _ := strings.Cut(op.desc, " ")
			c := stats[kind]
			if wantErr == nil {
				c[0]++
			} else {
				c[1]++
			}
			stats[kind] = c
			if errnoOf(gotErr) != errnoOf(wantErr) || !bytes.Equal(gotOut, wantOut) {
				t.Fatalf("seed %d, op #%d %s:\n target:    err=%v out=%s\n reference: err=%v out=%s\nlast ops:\n  %s",
					seed, i, op.desc, gotErr, short(gotOut), wantErr, short(wantOut), strings.Join(history, "\n  "))
			}
		}
		t.Logf("%d ops in %v; ok/failed per kind: %v", nops, time.Since(start).Round(time.Millisecond), stats)
		ok := 0
		for _, c := range stats {
			ok += c[0]
		}
		if ok < nops/4 {
			t.Fatalf("only %d of %d ops succeeded on the reference: the generator exercises too little", ok, nops)
		}
		opts := snapOpts{dirNlink: true}
		want := snapshot(t, ref)
		t.Logf("final tree: %d names", len(want))
		requireSameTree(t, fmt.Sprintf("seed %d: tree after %d ops", seed, nops), want, snapshot(t, root), opts)
		tg.remount(t)
		requireSameTree(t, fmt.Sprintf("seed %d: tree after remount", seed), want, snapshot(t, root), opts)
	})
}

func short(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// diffOp is one operation with all its random choices already made, so it can
// be applied identically to two roots.
type diffOp struct {
	desc string
	do   func(root string) ([]byte, error)
}

type opGen struct {
	r *rand.Rand
	n uint64
	// what the reference tree held at the last refresh
	files, dirs, all []string
}

var diffNames = []string{"a", "b", "c", "d", "e"}

// refresh rescans the reference tree so most operations hit existing names.
func (g *opGen) refresh(ref string) {
	// The root itself is never an operand: removing or renaming it would end the run.
	g.files, g.dirs, g.all = nil, nil, nil
	filepath.WalkDir(ref, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == ref {
			return nil
		}
		rel, _ := filepath.Rel(ref, p)
		g.all = append(g.all, rel)
		switch {
		case d.IsDir():
			g.dirs = append(g.dirs, rel)
		case d.Type().IsRegular():
			g.files = append(g.files, rel)
		}
		return nil
	})
}

func (g *opGen) pick(from []string) string {
	if len(from) == 0 || g.r.IntN(10) == 0 {
		return g.fresh()
	}
	return from[g.r.IntN(len(from))]
}

// fresh is a new name in an existing directory, or a random path of depth 1-3.
func (g *opGen) fresh() string {
	name := diffNames[g.r.IntN(len(diffNames))]
	if g.r.IntN(4) > 0 && len(g.dirs) > 0 {
		d := g.dirs[g.r.IntN(len(g.dirs))]
		if strings.Count(d, "/") < 3 {
			return filepath.Join(d, name)
		}
	}
	parts := []string{name}
	for len(parts) < 3 && g.r.IntN(2) == 0 {
		parts = append(parts, diffNames[g.r.IntN(len(diffNames))])
	}
	return strings.Join(parts, "/")
}

func (g *opGen) file() string { return g.pick(g.files) }
func (g *opGen) dir() string  { return g.pick(g.dirs) }
func (g *opGen) any() string  { return g.pick(g.all) }

// path is any name: existing (of any type) or fresh, half and half.
func (g *opGen) path() string {
	if g.r.IntN(2) == 0 {
		return g.fresh()
	}
	return g.any()
}

func (g *opGen) mode() uint32 {
	m := uint32(g.r.IntN(0o1000))
	if g.r.IntN(20) == 0 {
		m |= 0o1000 // sticky
	}
	return m
}

func (g *opGen) offset() int64 {
	switch x := g.r.IntN(100); {
	case x < 50:
		return int64(g.r.IntN(64 << 10))
	case x < 85:
		return int64(g.r.IntN(300 << 10))
	default:
		return int64(g.r.IntN(2 << 20))
	}
}

func (g *opGen) length() int {
	if g.r.IntN(10) < 7 {
		return 1 + g.r.IntN(4096)
	}
	return 1 + g.r.IntN(128<<10)
}

func (g *opGen) next() diffOp {
	g.n++
	w := g.r.IntN(100)
	switch {
	case w < 12:
		p, mode := g.path(), g.mode()
		flags := unix.O_CREAT | unix.O_WRONLY
		if g.r.IntN(4) == 0 {
			flags |= unix.O_EXCL
		}
		if g.r.IntN(5) == 0 {
			flags |= unix.O_TRUNC
		}
		return diffOp{fmt.Sprintf("create %q flags=%#x mode=%#o", p, flags, mode), func(root string) ([]byte, error) {
			return nil, openClose(filepath.Join(root, p), flags, mode)
		}}
	case w < 32:
		p, off, n, seed := g.file(), g.offset(), g.length(), g.n
		appendMode := g.r.IntN(10) == 0
		return diffOp{fmt.Sprintf("write %q off=%d len=%d append=%v", p, off, n, appendMode), func(root string) ([]byte, error) {
			flags := os.O_WRONLY
			if appendMode {
				flags |= os.O_APPEND
			}
			f, err := os.OpenFile(filepath.Join(root, p), flags, 0)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			data := pattern(seed, n)
			if appendMode {
				_, err = f.Write(data)
			} else {
				_, err = f.WriteAt(data, off)
			}
			if err != nil {
				return nil, err
			}
			return nil, f.Close()
		}}
	case w < 42:
		p, off, n := g.file(), g.offset(), g.length()
		return diffOp{fmt.Sprintf("read %q off=%d len=%d", p, off, n), func(root string) ([]byte, error) {
			fd, err := unix.Open(filepath.Join(root, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(fd)
			buf := make([]byte, n)
			got, err := unix.Pread(fd, buf, off)
			if err != nil {
				return nil, err
			}
			return buf[:got], nil
		}}
	case w < 48:
		p, size := g.file(), g.offset()
		if g.r.IntN(5) == 0 {
			size = 0
		}
		return diffOp{fmt.Sprintf("truncate %q size=%d", p, size), func(root string) ([]byte, error) {
			return nil, unix.Truncate(filepath.Join(root, p), size)
		}}
	case w < 57:
		a, b := g.any(), g.path()
		flags, name := uint(0), "rename"
		switch x := g.r.IntN(20); {
		case x < 2:
			flags, name = unix.RENAME_NOREPLACE, "rename-noreplace"
		case x < 3:
			flags, name = unix.RENAME_EXCHANGE, "rename-exchange"
		}
		return diffOp{fmt.Sprintf("%s %q %q", name, a, b), func(root string) ([]byte, error) {
			return nil, unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, a), unix.AT_FDCWD, filepath.Join(root, b), flags)
		}}
	case w < 62:
		a, b := g.file(), g.path()
		return diffOp{fmt.Sprintf("link %q %q", a, b), func(root string) ([]byte, error) {
			return nil, unix.Link(filepath.Join(root, a), filepath.Join(root, b))
		}}
	case w < 65:
		p := g.path()
		// Targets stay inside the tree: a sibling name or a path going down.
		target := diffNames[g.r.IntN(len(diffNames))]
		if g.r.IntN(2) == 0 {
			target += "/" + diffNames[g.r.IntN(len(diffNames))]
		}
		return diffOp{fmt.Sprintf("symlink %q -> %q", p, target), func(root string) ([]byte, error) {
			return nil, unix.Symlink(target, filepath.Join(root, p))
		}}
	case w < 71:
		p := g.any()
		return diffOp{fmt.Sprintf("unlink %q", p), func(root string) ([]byte, error) {
			return nil, unix.Unlink(filepath.Join(root, p))
		}}
	case w < 79:
		p, mode := g.fresh(), g.mode()
		return diffOp{fmt.Sprintf("mkdir %q mode=%#o", p, mode), func(root string) ([]byte, error) {
			return nil, unix.Mkdir(filepath.Join(root, p), mode)
		}}
	case w < 83:
		p := g.dir()
		return diffOp{fmt.Sprintf("rmdir %q", p), func(root string) ([]byte, error) {
			return nil, unix.Rmdir(filepath.Join(root, p))
		}}
	case w < 87:
		p, mode := g.any(), g.mode()
		return diffOp{fmt.Sprintf("chmod %q %#o", p, mode), func(root string) ([]byte, error) {
			return nil, unix.Chmod(filepath.Join(root, p), mode)
		}}
	case w < 91:
		p, name := g.any(), fmt.Sprintf("user.x%d", g.r.IntN(4))
		if g.r.IntN(4) == 0 {
			return diffOp{fmt.Sprintf("removexattr %q %s", p, name), func(root string) ([]byte, error) {
				return nil, unix.Removexattr(filepath.Join(root, p), name)
			}}
		}
		value := pattern(g.n, g.r.IntN(200))
		return diffOp{fmt.Sprintf("setxattr %q %s len=%d", p, name, len(value)), func(root string) ([]byte, error) {
			return nil, unix.Setxattr(filepath.Join(root, p), name, value, 0)
		}}
	case w < 94:
		p := g.any()
		return diffOp{fmt.Sprintf("fsync %q", p), func(root string) ([]byte, error) {
			fd, err := unix.Open(filepath.Join(root, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(fd)
			return nil, unix.Fsync(fd)
		}}
	case w < 98:
		p := g.any()
		return diffOp{fmt.Sprintf("lstat %q", p), func(root string) ([]byte, error) {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
				return nil, err
			}
			s := fmt.Sprintf("fmt=%#o perm=%#o", st.Mode&unix.S_IFMT, st.Mode&0o7777)
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				s += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
			}
			return []byte(s), nil
		}}
	default:
		p := g.dir()
		if g.r.IntN(4) == 0 {
			p = "."
		}
		return diffOp{fmt.Sprintf("readdir %q", p), func(root string) ([]byte, error) {
			es, err := os.ReadDir(filepath.Join(root, p))
			if err != nil {
				return nil, err
			}
			var names []string
			for _, e := range es {
				names = append(names, e.Name()+":"+e.Type().String())
			}
			sort.Strings(names)
			return []byte(strings.Join(names, ",")), nil
		}}
	}
}
