package fs

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// acl is the kernel's xattr form of an ACL with entries (tag, perm); named
// users and groups are id 1000.
func acl(entries ...[2]uint16) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e[0])
		b = binary.LittleEndian.AppendUint16(b, e[1])
		id := uint32(0xffffffff) // ACL_UNDEFINED_ID: the owner's, group's and other entries
		if e[0] == aclUser || e[0] == aclGroup {
			id = 1000
		}
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}

func TestACLMode(t *testing.T) {
	for _, c := range []struct {
		name string
		acl  []byte
		mode uint32
		err  error // nil, errACLNotMode, or any other (malformed)
	}{
		{"minimal", acl([2]uint16{aclUserObj, 7}, [2]uint16{aclGroupObj, 5}, [2]uint16{aclOther, 0}), 0o750, nil},
		{"minimal, none", acl([2]uint16{aclUserObj, 0}, [2]uint16{aclGroupObj, 0}, [2]uint16{aclOther, 0}), 0, nil},
		{"named user", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclUser, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclMask, 6}, [2]uint16{aclOther, 4}), 0, errACLNotMode},
		{"mask only", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclMask, 4}, [2]uint16{aclOther, 4}), 0, errACLNotMode},
		{"other missing", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclGroupObj, 4}), 0, errors.New("")},
		{"owner twice", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclUserObj, 7}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 4}), 0, errors.New("")},
		{"bad perm", acl([2]uint16{aclUserObj, 8}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 4}), 0, errors.New("")},
		{"bad tag", acl([2]uint16{aclUserObj, 6}, [2]uint16{0x40, 4}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 4}), 0, errors.New("")},
		{"bad version", append([]byte{1, 0, 0, 0}, acl([2]uint16{aclUserObj, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 4})[4:]...), 0, errors.New("")},
		{"torn entry", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 4})[:27], 0, errors.New("")},
		{"empty", nil, 0, errors.New("")},
	} {
		mode, err := aclMode(c.acl)
		switch {
		case c.err == nil && (err != nil || mode != c.mode):
			t.Errorf("%s: %o, %v; want %o", c.name, mode, err, c.mode)
		case c.err == errACLNotMode && !errors.Is(err, errACLNotMode):
			t.Errorf("%s: %v, want errACLNotMode", c.name, err)
		case c.err != nil && c.err != errACLNotMode && (err == nil || errors.Is(err, errACLNotMode)):
			t.Errorf("%s: %o, %v; want a malformed-ACL error", c.name, mode, err)
		}
	}
}

// FuzzACLMode: whatever the bytes, aclMode never panics, and what it accepts
// is exactly the three entries a mode can say.
func FuzzACLMode(f *testing.F) {
	f.Add(acl([2]uint16{aclUserObj, 7}, [2]uint16{aclGroupObj, 5}, [2]uint16{aclOther, 0}))
	f.Add(acl([2]uint16{aclUserObj, 6}, [2]uint16{aclUser, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclMask, 6}, [2]uint16{aclOther, 4}))
	f.Fuzz(func(t *testing.T, b []byte) {
		mode, err := aclMode(b)
		if err != nil {
			return
		}
		if len(b) != 4+3*aclEntrySize || mode&^0o777 != 0 {
			t.Fatalf("accepted %x as mode %o", b, mode)
		}
	})
}

// TestACLAsMode: an access ACL a mode can say, set on the drive and on the
// kernel's own file system beside it, leaves both at the same mode, and
// takes another user's read access away at once (the kernel checks
// permissions against the mode it has cached).
func TestACLAsMode(t *testing.T) {
	m, local := killPrivDirs(t, "a read by another user")
	asNobody := func(script, p string) error {
		cmd := exec.Command("sh", "-c", script, "sh", p)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd.Run()
	}
	for _, dir := range []string{local, m.mnt} {
		p := filepath.Join(dir, "f")
		must(t, os.WriteFile(p, []byte("secret"), 0o644))
		must(t, os.Chmod(p, 0o644))
		if err := asNobody(`cat "$1" >/dev/null`, p); err != nil {
			t.Fatalf("%s: another user cannot read a 0644 file: %v", dir, err)
		}
		must(t, unix.Setxattr(p, "system.posix_acl_access", acl([2]uint16{aclUserObj, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclOther, 0}), 0))
		if err := asNobody(`cat "$1" >/dev/null 2>&1`, p); err == nil { // before a stat refreshes the mode
			t.Errorf("%s: another user still reads the file after the ACL took other's read away", dir)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: after the ACL u::rw-,g::r--,o::---: %v, %v; want 0640", dir, fi.Mode(), err)
		}
	}

	// cp -a sets each copied node's access ACL and removes a directory's
	// default ACL: no error, and the modes as in the source.
	src := filepath.Join(local, "tree")
	must(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "sub", "g"), []byte("x"), 0o600))
	must(t, os.Chmod(filepath.Join(src, "sub"), 0o750))
	if out, err := exec.Command("cp", "-a", src, m.p("tree")).CombinedOutput(); err != nil {
		t.Fatalf("cp -a into the drive: %v\n%s", err, out)
	}
	for name, want := range map[string]os.FileMode{"tree/sub": 0o750, "tree/sub/g": 0o600} {
		if fi, err := os.Stat(m.p(name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s after cp -a: %v, %v; want %o", name, fi.Mode(), err, want)
		}
	}
}
