package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"kumo/internal/badgerlog"
)

// TestBadgerLogsToSlog: badger's warnings reach the server's structured log
// (a badger option once swapped the logger for badger's own, which printed
// unstructured lines on stderr), and its cache-size advice is only info.
func TestBadgerLogsToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o := badgerOptions(t.TempDir(), Config{Logger: log})
	if _, ok := o.Logger.(badgerlog.Logger); !ok {
		t.Fatalf("badger logs through %T, not the server's logger", o.Logger)
	}
	o.Logger.Warningf("Block cache might be too small. Metrics: %s\n", "x")
	o.Logger.Warningf("value log %d is corrupt\n", 7)
	out := buf.String()
	if strings.Contains(out, "too small") || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "value log 7 is corrupt") {
		t.Fatalf("log output: %q", out)
	}
}
