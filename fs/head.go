package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"kumo/internal/head"
	"kumo/internal/keys"
	"kumo/remote/api"
)

// headCheckEvery is how often the drive checks the account head when it has
// pushed nothing (other devices' heads, a server going back).
const headCheckEvery = 30 * time.Second

// headState checks and advances the account head (internal/head): after this
// device's pushes it appends the next head; before that, and every
// headCheckEvery, it checks the cloud's log against the last head it saw. A
// rollback or fork stops applying remote changes (the local tree stays as it
// is, nothing is pushed over it) and shows in the control file.
type headState struct {
	key  keys.Key
	path string // where Known is kept ("" with no cache dir: memory only)
	kick chan struct{}

	mu     sync.Mutex // serializes checks and advances
	known  head.Known
	broken atomic.Pointer[string] // why remote changes are no longer applied

	pushed  atomic.Bool   // pushes happened since the last head this device wrote
	pushSeq atomic.Uint64 // highest change seq the cloud reported for our pushes
}

func newHeadState(master keys.Key, cacheDir string) *headState {
	h := &headState{key: head.Key(master), kick: make(chan struct{}, 1)}
	if cacheDir != "" {
		h.path = filepath.Join(cacheDir, "head.json")
		if b, err := os.ReadFile(h.path); err == nil {
			_ = json.Unmarshal(b, &h.known) // a damaged file is a new device: it then trusts the cloud's head once
		}
	}
	return h
}

// Broken returns why the drive stopped applying remote changes ("" if it has not).
func (h *headState) Broken() string {
	if p := h.broken.Load(); p != nil {
		return *p
	}
	return ""
}

func (h *headState) save() error {
	if h.path == "" {
		return nil
	}
	b, _ := json.Marshal(h.known)
	tmp := h.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save head: %w", err)
	}
	return os.Rename(tmp, h.path)
}

// notePush records that the cloud accepted pushed changes up to seq.
func (h *headState) notePush(seq uint64) {
	for {
		cur := h.pushSeq.Load()
		if seq <= cur || h.pushSeq.CompareAndSwap(cur, seq) {
			break
		}
	}
	h.pushed.Store(true)
	kick(h.kick)
}

// checkHead compares the cloud's heads with the last one this device saw.
// Under h.mu.
func (d *Drive) checkHeadLocked(ctx context.Context) error {
	h := d.head
	if h.Broken() != "" {
		return errors.New(h.Broken())
	}
	for {
		from := h.known.Counter // 0: the current head only
		l, err := d.c.Heads(ctx, from)
		if err != nil {
			return fmt.Errorf("account head: %w", err)
		}
		known, err := head.Check(h.key, h.known, l.Heads)
		if err == nil && known.Counter < l.Current && len(l.Heads) == 0 {
			err = fmt.Errorf("%w: the cloud says head %d is current but sends none", head.ErrFork, l.Current)
		}
		if err != nil {
			d.headBroken(err)
			return err
		}
		changed := known != h.known
		h.known = known
		if changed {
			if err := h.save(); err != nil {
				return err
			}
		}
		if known.Counter >= l.Current {
			return nil
		}
	}
}

// headBroken stops applying remote changes and reports why.
func (d *Drive) headBroken(err error) {
	msg := "account head: " + err.Error() + "; remote changes are no longer applied here (nothing local is lost); see the drive's log"
	if !d.head.broken.CompareAndSwap(nil, &msg) {
		return
	}
	d.log.Error("the cloud's account history contradicts what this device saw: remote changes are no longer applied",
		"err", err, "known_head", d.head.known.Counter)
	d.integ.note(!errors.Is(err, head.ErrAuth), msg)
}

// advanceHead appends the next head after this device's pushes.
func (d *Drive) advanceHead(ctx context.Context) error {
	h := d.head
	h.mu.Lock()
	defer h.mu.Unlock()
	for attempt := 0; h.pushed.Load(); attempt++ {
		if err := d.checkHeadLocked(ctx); err != nil {
			return err
		}
		h.pushed.Store(false)
		next := head.Next(h.known, h.pushSeq.Load(), time.Now().UnixNano())
		b := next.Encode(h.key)
		err := d.c.PutHead(ctx, next.Counter, b)
		if errors.Is(err, api.ErrConflict) && attempt < 5 {
			h.pushed.Store(true) // another device advanced first: check its heads, then follow them
			continue
		}
		if err != nil {
			h.pushed.Store(true)
			return fmt.Errorf("advance account head: %w", err)
		}
		h.known = head.Known{Counter: next.Counter, Hash: head.HashOf(b), Seq: next.Seq}
		return h.save()
	}
	return nil
}

// headLoop advances the head after pushes and checks it now and then.
func (d *Drive) headLoop() {
	defer d.wg.Done()
	t := time.NewTicker(headCheckEvery)
	defer t.Stop()
	for {
		var err error
		if d.head.pushed.Load() {
			err = d.advanceHead(d.ctx)
		} else {
			d.head.mu.Lock()
			err = d.checkHeadLocked(d.ctx)
			d.head.mu.Unlock()
		}
		if err != nil && d.ctx.Err() == nil && d.head.Broken() == "" {
			d.noteErr(err)
		}
		select {
		case <-d.ctx.Done():
			return
		case <-d.head.kick:
		case <-t.C:
		}
	}
}
