package badgerlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLevels: warnings and errors reach slog at their level, without
// badger's trailing newlines; the cache-size advice is only info.
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
