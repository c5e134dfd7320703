package badgerlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLevels: warnings and errors reach slog at their level, without
// badger's trailing newlines; the cache-size advice is only debug.
func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	l.Warningf("Block cache might be too small. Metrics: %s\n", "x")
	l.Warningf("value log %d is corrupt\n", 7)
	l.Errorf("compaction failed: %v\n", "disk full")
	l.Infof("chatter %d", 1)
	out := buf.String()
	if strings.Contains(out, "too small") || strings.Contains(out, "chatter") ||
		!strings.Contains(out, `level=WARN msg="badger: value log 7 is corrupt"`) ||
		!strings.Contains(out, `level=ERROR msg="badger: compaction failed: disk full"`) {
		t.Fatalf("log output: %q", out)
	}
}

// TestCacheAdviceNotInfo: badger's cache-size advice and the histogram it
// prints after it (every minute on a busy tree) stay out of an info-level
// log: nobody acts on them.
func TestCacheAdviceNotInfo(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Warningf("Block cache might be too small. Metrics: %s\n", "hit: 1 miss: 9")
	l.Warningf("Cache life expectancy (in seconds): %+v\n", "-- Histogram:\nMin value: 0\n[0, 2) 5 100.00%")
	if out := buf.String(); out != "" {
		t.Fatalf("info-level log shows badger's cache advice: %q", out)
	}
	var dbg bytes.Buffer
	l = Logger{slog.New(slog.NewTextHandler(&dbg, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Warningf("Block cache might be too small. Metrics: %s\n", "x")
	if !strings.Contains(dbg.String(), "level=DEBUG") {
		t.Fatalf("debug log: %q", dbg.String())
	}
}
