package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// readAhead is how many chunks after the current one a sequential reader fetches.
const readAhead = 3

// fetcher reads base chunk segments: chunk cache first, then the cloud, with
// concurrent requests for the same data merged.
type fetcher struct {
	d        *Drive
	mu       sync.Mutex
	inflight map[string]*fetchCall // "ID" (whole chunk) or "ID/k" (one segment)
	sem      chan struct{}
}

type fetchCall struct {
	done  chan struct{}
	first int
	segs  [][]byte // sealed segments from first
	err   error
}

// segment returns the plaintext of segment k of base chunk ci.
func (f *fetcher) segment(ctx context.Context, node uint64, base []meta.ChunkRef, ci, k int, seq bool) ([]byte, error) {
	ref := base[ci]
	id := ref.ID.String()
	if sealed, ok := f.d.store.GetSegment(id, k); ok {
		p, err := f.d.cipher.OpenSegment(nil, ref.ID, int(ref.Len), k, sealed)
		if err == nil {
			if seq && k == 0 {
				f.readAhead(node, base, ci)
			}
			return p, nil
		}
		f.d.log.Error("cached chunk segment fails authentication; refetching", "node", node, "chunk", id, "segment", k, "err", err)
		_ = f.d.store.ForgetChunk(id)
	}
	var sealed []byte
	var err error
	if seq {
		sealed, err = f.wait(ctx, f.chunk(id, int(ref.Len)), k)
		f.readAhead(node, base, ci)
	} else {
		sealed, err = f.wait(ctx, f.seg(id, int(ref.Len), k), k)
	}
	if err != nil {
		f.d.log.Warn("reading chunk from the cloud failed", "node", node, "chunk", id, "segment", k, "err", err)
		return nil, syscall.EIO
	}
	p, err := f.d.cipher.OpenSegment(nil, ref.ID, int(ref.Len), k, sealed)
	if err != nil {
		f.d.log.Error("chunk fails authentication", "node", node, "chunk", id, "segment", k, "err", err)
		_ = f.d.store.ForgetChunk(id)
		return nil, syscall.EIO
	}
	return p, nil
}

// readAhead starts fetching the chunks after ci that are not cached.
func (f *fetcher) readAhead(node uint64, base []meta.ChunkRef, ci int) {
	for i := ci + 1; i <= ci+readAhead && i < len(base); i++ {
		r := base[i]
		if r.ID.IsZero() {
			continue
		}
		id := r.ID.String()
		last := chunk.Segments(int(r.Len)) - 1
		if _, ok := f.d.store.GetSegment(id, last); ok {
			continue
		}
		f.chunk(id, int(r.Len))
	}
}

func (f *fetcher) wait(ctx context.Context, c *fetchCall, k int) ([]byte, error) {
	t := time.NewTimer(readTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("no answer from the cloud within %s", readTimeout)
	}
	if c.err != nil {
		return nil, c.err
	}
	if k < c.first || k-c.first >= len(c.segs) {
		return nil, fmt.Errorf("segment %d not in the answer", k)
	}
	return c.segs[k-c.first], nil
}

// chunk starts (or joins) a whole-chunk fetch.
func (f *fetcher) chunk(id string, plainLen int) *fetchCall {
	return f.start(id, func(ctx context.Context) (int, [][]byte, error) {
		b, err := f.d.c.GetChunk(ctx, id, 0, -1)
		if err != nil {
			return 0, nil, err
		}
		if len(b) != chunk.SealedSize(plainLen) {
			return 0, nil, fmt.Errorf("chunk %s: %d sealed bytes, want %d: %w", id, len(b), chunk.SealedSize(plainLen), chunk.ErrAuth)
		}
		var segs [][]byte
		for off := 0; off < len(b); off += chunk.SealedSegmentSize {
			segs = append(segs, b[off:min(len(b), off+chunk.SealedSegmentSize)])
		}
		return 0, segs, nil
	})
}

// seg starts (or joins) a one-segment fetch; a running whole-chunk fetch is joined instead.
func (f *fetcher) seg(id string, plainLen, k int) *fetchCall {
	f.mu.Lock()
	if c := f.inflight[id]; c != nil {
		f.mu.Unlock()
		return c
	}
	f.mu.Unlock()
	return f.start(fmt.Sprintf("%s/%d", id, k), func(ctx context.Context) (int, [][]byte, error) {
		off, n := chunk.SegmentRange(plainLen, k)
		b, err := f.d.c.GetChunk(ctx, id, int64(off), int64(n))
		if err != nil {
			return 0, nil, err
		}
		return k, [][]byte{b}, nil
	})
}

func (f *fetcher) start(key string, fn func(context.Context) (int, [][]byte, error)) *fetchCall {
	f.mu.Lock()
	if c := f.inflight[key]; c != nil {
		f.mu.Unlock()
		return c
	}
	if f.sem == nil {
		f.sem = make(chan struct{}, 8)
	}
	c := &fetchCall{done: make(chan struct{})}
	f.inflight[key] = c
	f.mu.Unlock()
	id := key
	go func() {
		f.sem <- struct{}{}
		ctx, cancel := context.WithTimeout(f.d.ctx, time.Minute)
		c.first, c.segs, c.err = fn(ctx)
		cancel()
		<-f.sem
		if c.err != nil {
			if errors.Is(c.err, api.ErrUnavailable) {
				f.d.noteErr(c.err)
			}
		} else {
			f.d.noteOnline()
			if err := f.d.store.PutSegments(chunkIDOf(id), c.first, c.segs); err != nil {
				f.d.log.Warn("caching chunk", "chunk", id, "err", err)
			}
		}
		f.mu.Lock()
		delete(f.inflight, key)
		f.mu.Unlock()
		close(c.done)
	}()
	return c
}

func chunkIDOf(key string) string {
	if len(key) > api.HexIDLen {
		return key[:api.HexIDLen]
	}
	return key
}
