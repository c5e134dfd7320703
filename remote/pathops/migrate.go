package pathops

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// MigrateStats counts what Migrate looked at and re-sealed.
type MigrateStats struct {
	Checked int // entries and nodes looked at
	Nodes   int // node records re-sealed
	Names   int // entry names re-sealed
	Skipped int // records another client changed meanwhile (run again)
}

// Migrate re-seals every v1 record of the account in format v2 — each node's
// attributes as a new revision, each entry's name bound to its node — and
// then marks the root directory all-v2, after which every client refuses any
// v1 record of the account (docs/FORMAT.md §3b). Every record is
// authenticated before it is re-sealed, and nothing else changes. It can be
// interrupted and run again at any time: records already in v2 are left as
// they are, and the mark is set only once a pass finds no v1 record left.
// Drives mounted meanwhile follow along through the change feed.
func (f *FS) Migrate(ctx context.Context, progress func(MigrateStats)) (MigrateStats, error) {
	var st MigrateStats
	report := func() {
		if progress != nil {
			progress(st)
		}
	}
	root, err := f.c.GetNode(ctx, api.RootID)
	if err != nil {
		return st, fmt.Errorf("migrate: root: %w", err)
	}
	seen := map[uint64]bool{api.RootID: true}
	for queue := []uint64{api.RootID}; len(queue) > 0; queue = queue[1:] {
		dir := queue[0]
		es, err := f.c.List(ctx, dir)
		if err != nil {
			return st, fmt.Errorf("migrate: list directory %d: %w", dir, err)
		}
		for _, e := range es {
			st.Checked++
			if err := f.migrateName(ctx, dir, e, &st); err != nil {
				return st, err
			}
			if !seen[e.Node.ID] {
				seen[e.Node.ID] = true
				st.Checked++
				if err := f.migrateNode(ctx, e.Node, nil, &st); err != nil {
					return st, err
				}
			}
			if e.Node.Type == api.TypeDir {
				queue = append(queue, e.Node.ID)
			}
			if st.Checked%1000 < 2 {
				report()
			}
		}
	}
	if st.Skipped > 0 {
		report()
		return st, fmt.Errorf("migrate: %d records changed while they were migrated; run kumo migrate again", st.Skipped)
	}
	mark := func(a *meta.Attrs) {
		a.Xattrs = maps.Clone(a.Xattrs)
		if a.Xattrs == nil {
			a.Xattrs = map[string][]byte{}
		}
		a.Xattrs[meta.FormatMark] = []byte(meta.FormatMarkV2)
	}
	if err := f.migrateNode(ctx, root, mark, &st); err != nil {
		return st, err
	}
	if st.Skipped > 0 {
		return st, errors.New("migrate: the root directory changed while it was marked; run kumo migrate again")
	}
	f.sealer.RequireV2()
	report()
	return st, nil
}

// migrateName re-seals a v1 entry name in place, bound to its node.
func (f *FS) migrateName(ctx context.Context, dir uint64, e api.Entry, st *MigrateStats) error {
	if len(e.Name) == 0 || e.Name[0] != meta.SealedV1 {
		return nil
	}
	kind := meta.KindOf(e.Node.Type == api.TypeDir)
	name, err := f.sealer.OpenName(dir, e.Node.ID, kind, e.NameMAC, e.Name)
	if err != nil {
		return fmt.Errorf("migrate: entry %s of directory %d: %w (not re-sealed)", e.NameMAC, dir, err)
	}
	err = f.c.Rename(ctx, api.RenameRequest{SrcParent: dir, SrcNameMAC: e.NameMAC, DstParent: dir, DstNameMAC: e.NameMAC,
		Name: f.sealer.SealName(dir, e.Node.ID, kind, name), Node: e.Node.ID})
	switch {
	case errors.Is(err, api.ErrConflict), errors.Is(err, api.ErrNotFound):
		st.Skipped++ // renamed or replaced meanwhile: by a v2 client, or checked by the next run
		return nil
	case err != nil:
		return fmt.Errorf("migrate: entry %s of directory %d: %w", e.NameMAC, dir, err)
	}
	st.Names++
	return nil
}

// migrateNode re-seals a node's v1 attributes as a v2 revision (change, when
// set, edits them first; then the node is re-sealed even if already v2).
func (f *FS) migrateNode(ctx context.Context, n api.Node, change func(*meta.Attrs), st *MigrateStats) error {
	for attempt := 0; ; attempt++ {
		if change == nil && len(n.Attrs) > 0 && n.Attrs[0] != meta.SealedV1 {
			return nil
		}
		a, err := f.open("", "", 0, "", n) // authenticates, checks the chunk list
		if err != nil {
			return fmt.Errorf("migrate: node %d: %w (not re-sealed)", n.ID, err)
		}
		if change != nil {
			if meta.HasFormatMarkV2(a.Attrs) && n.Attrs[0] != meta.SealedV1 {
				return nil
			}
			change(a.Attrs)
		}
		sealed := f.sealer.SealAttrs(n.ID, meta.NextRev(meta.Rev(n.Attrs)), a.Attrs)
		chunks := n.Chunks
		if chunks == nil {
			chunks = []string{}
		}
		_, err = f.c.Update(ctx, n.ID, api.UpdateRequest{Version: n.Version, Attrs: sealed, Chunks: chunks})
		if err == nil {
			st.Nodes++
			return nil
		}
		if errors.Is(err, api.ErrNotFound) {
			return nil // deleted meanwhile
		}
		if !errors.Is(err, api.ErrConflict) || attempt >= 4 {
			if errors.Is(err, api.ErrConflict) {
				st.Skipped++
				return nil
			}
			return fmt.Errorf("migrate: node %d: %w", n.ID, err)
		}
		if n, err = f.c.GetNode(ctx, n.ID); err != nil {
			if errors.Is(err, api.ErrNotFound) {
				return nil
			}
			return fmt.Errorf("migrate: node %d: %w", n.ID, err)
		}
	}
}
