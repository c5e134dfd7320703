// Package mountpoint tells what is at a mount point: which file system is
// mounted there (from /proc/self/mountinfo) and which processes hold it
// busy (as `fuser -m` would). `kumo mount` uses it to refuse a directory that
// is already mounted, `kumo unmount` to say plainly what is not mounted or
// who keeps a drive busy.
package mountpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// KumoType is the file system type the kernel shows for a kumo drive.
const KumoType = "fuse.kumo"

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Dir    string // where it is mounted
	Type   string // e.g. fuse.kumo, ext4, tmpfs
	Source string // e.g. kumo, /dev/sda1
}

// IsKumo reports whether the mount is a kumo drive.
func (m Mount) IsKumo() bool { return m.Type == KumoType }

// Resolve makes path absolute and resolves symlinks in it, as the kernel
// names a mount point. A dead FUSE mount cannot be stat'ed (ENOTCONN), so
// when resolving fails the absolute, cleaned path is returned.
func Resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	// Resolve the parent at least: the last element may be the dead mount.
	if r, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(r, filepath.Base(abs)), nil
	}
	return abs, nil
}

// Lookup returns the topmost mount at dir (an absolute, resolved path) and
// whether there is one.
func Lookup(dir string) (Mount, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Mount{}, false, fmt.Errorf("read the mount table: %w", err)
	}
	defer f.Close()
	return lookup(f, dir)
}

func lookup(r io.Reader, dir string) (Mount, bool, error) {
	var (
		found Mount
		ok    bool
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, err := parseLine(sc.Text())
		if err != nil {
			return Mount{}, false, err
		}
		// Later lines are mounted later: the last match is the top one.
		if m.Dir == dir {
			found, ok = m, true
		}
	}
	if err := sc.Err(); err != nil {
		return Mount{}, false, fmt.Errorf("read the mount table: %w", err)
	}
	return found, ok, nil
}

// parseLine parses one mountinfo line (proc(5)):
// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
func parseLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(f) {
		return Mount{}, fmt.Errorf("mount table: malformed line %q", line)
	}
	m := Mount{Dir: unescape(f[4]), Type: unescape(f[sep+1])}
	if sep+2 < len(f) {
		m.Source = unescape(f[sep+2])
	}
	return m, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space, \011, \012, \134).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Process is a process that keeps a mount busy.
type Process struct {
	PID  int
	Comm string   // its command name
	Uses []string // how: "cwd", "root", "fd 3 (/mnt/f)", "mmap /mnt/lib.so"
}

func (p Process) String() string {
	return fmt.Sprintf("%s (pid %d: %s)", p.Comm, p.PID, strings.Join(p.Uses, ", "))
}

// Holders lists the processes whose working directory, root, open files or
// mapped files lie under dir, as far as /proc lets us see (all of them for
// root, our own otherwise). It reads link targets only and never stats a
// path, so it cannot hang on the mount it inspects.
func Holders(dir string) []Process {
	under := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == dir || strings.HasPrefix(p, dir+"/")
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		base := "/proc/" + e.Name()
		var uses []string
		for _, l := range []string{"cwd", "root"} {
			if t, err := os.Readlink(base + "/" + l); err == nil && under(t) {
				uses = append(uses, l)
			}
		}
		if fds, err := os.ReadDir(base + "/fd"); err == nil {
			for _, fd := range fds {
				if t, err := os.Readlink(base + "/fd/" + fd.Name()); err == nil && under(t) {
					uses = append(uses, "fd "+fd.Name()+" ("+t+")")
				}
			}
		}
		if maps, err := os.ReadFile(base + "/maps"); err == nil {
			seen := map[string]bool{}
			for _, line := range strings.Split(string(maps), "\n") {
				f := strings.Fields(line)
				if len(f) >= 6 {
					p := strings.Join(f[5:], " ")
					if under(p) && !seen[p] {
						seen[p] = true
						uses = append(uses, "mmap "+p)
					}
				}
			}
		}
		if len(uses) == 0 {
			continue
		}
		comm, _ := os.ReadFile(base + "/comm")
		out = append(out, Process{PID: pid, Comm: strings.TrimSpace(string(comm)), Uses: uses})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// Entries returns up to max names in dir (to tell whether it is empty).
func Entries(dir string, max int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(max)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return names, err
}
