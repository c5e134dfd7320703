// Package badgerlog routes badger's log to slog: errors and warnings are
// kept, badger's chatter (info, debug) is dropped.
package badgerlog

import (
	"fmt"
	"log/slog"
	"strings"
)

// Logger is a badger.Logger over slog. Set it with Options.WithLogger and
// not with WithLoggingLevel, which replaces it with badger's own logger
// (unstructured lines on stderr).
type Logger struct{ L *slog.Logger }

func (l Logger) Errorf(f string, a ...any) { l.L.Error(message(f, a)) }

// Warningf logs at warn level, except badger's advice on cache sizes and
// the cache life-expectancy histogram that follows it (a hit-ratio
// heuristic that fires every minute on any scan of a big tree): nobody can
// act on them, so they are debug. Info is kept for what a user or operator
// acts on.
func (l Logger) Warningf(f string, a ...any) {
	msg := message(f, a)
	if strings.Contains(msg, "might be too small") || strings.Contains(msg, "Cache life expectancy") {
		l.L.Debug(msg)
		return
	}
	l.L.Warn(msg)
}

func (Logger) Infof(string, ...any)  {}
func (Logger) Debugf(string, ...any) {}

func message(f string, a []any) string {
	return "badger: " + strings.TrimSpace(fmt.Sprintf(f, a...))
}
