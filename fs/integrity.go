package fs

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// integrity counts what the cloud sent that the drive refused: records that
// fail authentication (forged, swapped or corrupted) and older revisions of a
// node than one already seen (a rollback). Each refusal is logged and shown
// in the control file; the reader gets EIO or keeps the newer local state.
type integrity struct {
	mu        sync.Mutex
	failures  int64 // authentication failures
	rollbacks int64 // refused older revisions
	last      string
	lastAt    time.Time
}

// IntegrityReport is the control file's view of integrity.
type IntegrityReport struct {
	AuthFailures int64
	Rollbacks    int64
	Last         string
	LastAt       time.Time
}

func (g *integrity) note(rollback bool, what string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rollback {
		g.rollbacks++
	} else {
		g.failures++
	}
	g.last, g.lastAt = what, time.Now()
}

func (g *integrity) report() IntegrityReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	return IntegrityReport{AuthFailures: g.failures, Rollbacks: g.rollbacks, Last: g.last, LastAt: g.lastAt}
}

// Integrity returns the counts of refused records since the mount.
func (d *Drive) Integrity() IntegrityReport { return d.integ.report() }

// authFailure logs and counts a record that fails authentication.
func (d *Drive) authFailure(msg string, args ...any) {
	d.log.Error(msg, args...)
	d.integ.note(false, fmt.Sprint(append([]any{msg + ":"}, args...)...))
}

// rolledBackLocked reports whether a record of node id at revision rev is
// older than the revision known here, and if so logs and counts the refusal.
// v1 records have revision 0, so a v1 record replayed over a v2 one is refused
// too. Under d.mu.
func (d *Drive) rolledBackLocked(id, known, rev uint64) bool {
	if rev >= known {
		return false
	}
	d.log.Error("the cloud sent an older version of a node than one already seen: refused (rollback)",
		slog.Uint64("node", id), slog.Uint64("revision", rev), slog.Uint64("known_revision", known))
	d.integ.note(true, fmt.Sprintf("node %d: revision %d is older than %d (rollback refused)", id, rev, known))
	return true
}
