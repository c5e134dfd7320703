package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"syscall"

	"kumo/internal/meta"
)

// POSIX ACLs are not stored (permissions are the mode bits), but an access
// ACL that says no more than a mode does is one: setting it is a chmod, as
// on ext4, which folds such an ACL into the mode and keeps no xattr. cp -a
// sets one on every file it copies; refused, it falls back to a chmod of
// its own (a second round trip per file).

// The names the kernel passes ACLs by. Removing either succeeds: no ACL is
// stored, so there is nothing beyond the mode to remove. cp -a, having set
// a directory's access ACL, removes its default ACL, and reports a refusal.
const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

// The kernel's xattr form of an ACL (include/uapi/linux/posix_acl_xattr.h):
// a little-endian version, then entries of tag, permissions and id.
const (
	aclVersion   = 2
	aclEntrySize = 8

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// errACLNotMode is an ACL with entries a mode cannot say (named users or
// groups, a mask).
var errACLNotMode = errors.New("ACL has entries beyond the mode's")

// aclMode returns the permission bits (0o777) an access ACL in the kernel's
// xattr form is equivalent to: errACLNotMode if it names users or groups or
// has a mask, another error if it is malformed.
func aclMode(b []byte) (uint32, error) {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclVersion || (len(b)-4)%aclEntrySize != 0 {
		return 0, errors.New("malformed ACL")
	}
	var mode uint32
	var seen uint16
	for e := b[4:]; len(e) > 0; e = e[aclEntrySize:] {
		tag, perm := binary.LittleEndian.Uint16(e), uint32(binary.LittleEndian.Uint16(e[2:]))
		if perm&^7 != 0 {
			return 0, errors.New("malformed ACL: permission bits beyond rwx")
		}
		switch tag {
		case aclUserObj:
			mode |= perm << 6
		case aclGroupObj:
			mode |= perm << 3
		case aclOther:
			mode |= perm
		case aclUser, aclGroup, aclMask:
			return 0, errACLNotMode
		default:
			return 0, errors.New("malformed ACL: unknown tag")
		}
		if seen&tag != 0 {
			return 0, errors.New("malformed ACL: an entry twice")
		}
		seen |= tag
	}
	if seen != aclUserObj|aclGroupObj|aclOther {
		return 0, errors.New("malformed ACL: owner, group or other entry missing")
	}
	return mode, nil
}

// setACLAccess sets an access ACL that a mode can say as that mode, as a
// chmod by the caller would; any other ACL is refused with EOPNOTSUPP, as
// before. The kernel checked that the caller owns the node (or may act as
// if) before passing the ACL on.
func (n *fnode) setACLAccess(ctx context.Context, data []byte) syscall.Errno {
	perm, err := aclMode(data)
	if errors.Is(err, errACLNotMode) {
		return syscall.EOPNOTSUPP
	}
	if err != nil {
		return syscall.EINVAL
	}
	st, e := n.state()
	if e != 0 {
		return e
	}
	cuid, cgid := caller(ctx)
	e = n.d.setAttrs(st, func(a *meta.Attrs) syscall.Errno {
		if cuid != 0 && cuid != a.UID {
			return syscall.EPERM
		}
		a.Mode = a.Mode&^0o777 | perm
		if cuid != 0 && cgid != a.GID { // as chmod does for a caller outside the group
			a.Mode &^= syscall.S_ISGID
		}
		a.Ctime = nowNs()
		return 0
	})
	if e == 0 {
		// The kernel invalidates only the ctime after a setxattr, and checks
		// permissions against the mode it has: drop all of it now.
		n.NotifyContent(-1, 0)
	}
	return e
}
