package fs

import (
	"context"
	"fmt"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/control"
	"kumo/internal/link"
	"kumo/internal/size"
	"kumo/remote/pathops"
)

// linkWaiting is what .kumo shows of a link until the drive's uploads are done.
const linkWaiting = "making the link: waiting for pending uploads (a link shows what the cloud has)"

// makeLink runs `link PATH` from the control file in the background: reading
// and hashing every chunk of a big folder takes minutes. It waits for the
// drive's pending uploads (the link names what the cloud has), makes the
// link with chunks the chunk cache holds whole read from there, and shows
// progress, then the URL, in .kumo: in its list of links (which a later
// command leaves alone) and as the last command.
func (d *Drive) makeLink(ctx context.Context, cmd control.Command, shown string) {
	defer d.linking.Store(false)
	p := d.drivePath(cmd.Path) // runCommand already shows it as waiting
	if err := d.Flush(ctx); err != nil {
		err = unreachableErr(fmt.Errorf("link: pending uploads: %w (write the command again once they are done)", err))
		d.ctl.linkDone(cmd.Path, "", "", err)
		d.commandFailed(shown, err)
		return
	}
	d.log.Info("control file: making a link", "path", p)
	var last time.Time
	o := pathops.LinkOptions{Local: linkCache{d}, Progress: func(s pathops.LinkProgress) {
		if time.Since(last) < 200*time.Millisecond {
			return
		}
		last = time.Now()
		msg := fmt.Sprintf("making the link: %d entries listed", s.Entries)
		if s.Chunks > 0 {
			msg = fmt.Sprintf("making the link: %d of %d chunks read and hashed (%s of %s), %d of them from the local cache",
				s.ChunksDone, s.Chunks, size.Format(s.BytesDone), size.Format(s.Bytes), s.Local)
		}
		d.ctl.linkRunning(shown, cmd.Path, msg)
	}}
	var skipped int
	u, err := d.pathFS().CreateLink(ctx, p, o, func(string) { skipped++ })
	if err != nil {
		err = unreachableErr(fmt.Errorf("%w (nothing was made: write the command again)", err))
		d.ctl.linkDone(cmd.Path, "", "", err)
		d.commandFailed(shown, err)
		return
	}
	msg := "link (read-only, a snapshot of " + cmd.Path + " as it was when made): " + u
	note := ""
	if skipped > 0 {
		note = fmt.Sprintf("(%d special files left out)", skipped)
		msg += " " + note
	}
	// The URL holds the link's secret: it goes to .kumo only, never to the log.
	id := ""
	if _, lid, _, err := link.ParseURL(u); err == nil {
		id = lid.String()
	}
	d.log.Info("control file: link made", "path", p, "link", id)
	d.ctl.linkDone(cmd.Path, u, note, nil)
	d.ctl.record(shown, true, msg)
}

// linkCache is the drive's chunk cache as a link's local copy of sealed
// chunks: it holds the segments exactly as the cloud stores them (as
// fetched, or as sealed for upload), and a sealed chunk is its segments
// one after another (docs/FORMAT.md section 4).
type linkCache struct{ d *Drive }

// SealedChunk appends chunk id's sealed segments to dst if every one of
// them is cached; it asks before reading so that a partly cached chunk
// counts as no miss in the cache's hit rate.
func (c linkCache) SealedChunk(dst []byte, id string, n int) ([]byte, bool) {
	if !c.d.cachesChunks() || c.d.ctx.Err() != nil { // not while the drive stops
		return nil, false
	}
	segs := chunk.Segments(n)
	for k := range segs {
		if !c.d.store.HasSegment(id, k) {
			return nil, false
		}
	}
	for k := range segs {
		var ok bool
		if dst, ok = c.d.store.AppendSegment(dst, id, k); !ok {
			return nil, false // evicted meanwhile
		}
	}
	return dst, true
}

// Bad drops a cached chunk that failed its check, as a read does.
func (c linkCache) Bad(id string, err error) {
	c.d.log.Error("cached chunk fails authentication; reading the cloud's for a link", "chunk", id, "err", err)
	_ = c.d.store.ForgetChunk(id)
}
