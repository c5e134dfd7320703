package pathops

// Kept versions of shared folders. After a writer's removal the owner
// re-seals the folder under a new generation and the roster refuses every
// record of an older one (FORMAT §3g): the former writer kept those
// generations' keys and its signing key, so with the server it could make
// such records now. Versions kept from before the re-seal are of older
// generations. History views (this FS's past copy) open them if the owner
// or a current writer signed them, which the former writer cannot forge;
// ones the former writer signed stay refused. The live tree never does.

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"kumo/internal/keys"
	"kumo/internal/meta"
)

// VerifyHistory checks b, a kept version of a record of share s, as Verify
// does, except that below the roster's lowest accepted generation it is
// accepted if the owner or a current writer signed it
// (keys.Roster.HistorySigner). Only history views use it.
func (s *Share) VerifyHistory(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, error) {
	return s.verify(kind, id, nameMAC, b, true)
}

// past returns a copy of f that opens kept versions by the history rule.
func (f *FS) past() *FS {
	if f.history {
		return f
	}
	c := *f
	c.history = true
	return &c
}

// nameMACsIn returns the MACs name may have in directory dir: in a share,
// one per generation this client holds, newest first.
func (f *FS) nameMACsIn(dir *Node, name string) []string {
	dk, _ := meta.RecordKeyID(dir.Node.Attrs)
	s := f.shares[dk.Share]
	if dk.Share == 0 || s == nil {
		return []string{f.sealer.NameMAC(dir.ID(), []byte(name))}
	}
	var out []string
	for _, g := range s.gens() {
		if mac, err := f.sealer.NameMACAs(s.kid(g), dir.ID(), []byte(name)); err == nil {
			out = append(out, mac)
		}
	}
	return out
}

// restoreWriter returns the FS that writes a restored record under the
// share (0: the home tree) of the live directory or node it goes into:
// sealed under that share's current generation and signed by this
// account, whatever generation the kept version was of.
func (r *restorer) restoreWriter(share uint64) (*FS, error) {
	f := r.f
	if f.scope != nil {
		if share != f.scope.ID {
			return nil, fmt.Errorf("restore: node outside shared folder %s: %w", f.scope.Name(), ErrNotInShare)
		}
		return f, nil
	}
	if share == 0 {
		return f, nil
	}
	s := f.shares[share]
	if s == nil || s.Role != keys.RoleWriter || f.me == nil {
		return nil, fmt.Errorf("restore: into shared folder %016x, which this client cannot write: %w", share, ErrNotInShare)
	}
	if v := r.writers[share]; v != nil {
		return v, nil
	}
	v := *f
	v.scope = s
	v.cipher = s.ciphers[s.Gen()]
	if v.cipher == nil {
		return nil, fmt.Errorf("restore: shared folder %s: this client lacks the current generation %d's secret", s.Name(), s.Gen())
	}
	if r.writers == nil {
		r.writers = map[uint64]*FS{}
	}
	r.writers[share] = &v
	return &v, nil
}

// restoredAttrs returns the attributes that w writes for snapshot node n:
// n's own, or, when n was sealed under other keys than w writes with (an
// older generation of a shared folder, or another tree), n's with every
// chunk re-encrypted under w's keys and uploaded: a chunk's keys are those
// of the attributes naming it, and the live tree names no chunk of a
// generation the roster no longer accepts. Each chunk is checked whole
// against its id before it is re-encrypted.
func (r *restorer) restoredAttrs(ctx context.Context, w *FS, n *Node) (*meta.Attrs, error) {
	k, _ := meta.RecordKeyID(n.Node.Attrs)
	if n.IsDir() || len(n.Attrs.Chunks) == 0 || k == w.writeKID() {
		return n.Attrs, nil
	}
	key := recryptKey{node: n.ID(), rev: meta.Rev(n.Node.Attrs), to: w.writeKID()}
	if a := r.recrypted[key]; a != nil {
		return a, nil
	}
	a, err := w.recrypt(ctx, r.f, n)
	if err != nil {
		return nil, fmt.Errorf("restore: re-encrypting %s under the current keys: %w", n.Path, err)
	}
	if r.recrypted == nil {
		r.recrypted = map[recryptKey]*meta.Attrs{}
	}
	r.recrypted[key] = a
	return a, nil
}

// recryptKey names a kept version re-encrypted for a key id.
type recryptKey struct {
	node, rev uint64
	to        meta.KeyID
}

// sameAs reports whether the live file (or symlink) live holds what
// snapshot node n held, comparing chunk ids under the keys live is sealed
// with (n's chunks re-encrypted if n is of other keys).
func (r *restorer) sameAs(ctx context.Context, live, n *Node) (bool, error) {
	if live.Attrs.Mode&syscall.S_IFMT != n.Attrs.Mode&syscall.S_IFMT || live.Attrs.Size != n.Attrs.Size {
		return false, nil
	}
	w, err := r.restoreWriter(shareOf(live))
	if err != nil {
		return false, err
	}
	a, err := r.restoredAttrs(ctx, w, n)
	if err != nil {
		return false, err
	}
	return sameContent(live.Attrs, a), nil
}

// refusedHint tells what to do when a snapshot to restore holds a shared
// folder's version this client refuses (one written by a member since
// removed, say): nothing is restored, the paths beside it can be.
func refusedHint(err error) string {
	if !errors.Is(err, ErrShare) {
		return ""
	}
	return " (nothing was restored; restore the paths beside the refused one one by one)"
}

// shareOf returns the share n's attributes are sealed for (0: home).
func shareOf(n *Node) uint64 {
	k, _ := meta.RecordKeyID(n.Node.Attrs)
	return k.Share
}
