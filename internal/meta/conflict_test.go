package meta

import (
	"strings"
	"testing"
	"time"
)

func TestConflictName(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	for _, c := range []struct {
		name string
		n    int
		want string
	}{
		{"report.pdf", 1, "report (conflict 2026-03-04 050607).pdf"},
		{"report.pdf", 3, "report (conflict 2026-03-04 050607 3).pdf"},
		{"Makefile", 1, "Makefile (conflict 2026-03-04 050607)"},
		{".bashrc", 1, ".bashrc (conflict 2026-03-04 050607)"},
	} {
		got := ConflictName(c.name, c.n, now)
		if got != c.want {
			t.Errorf("ConflictName(%q, %d) = %q, want %q", c.name, c.n, got, c.want)
		}
		if !IsConflictOf(got, c.name) {
			t.Errorf("IsConflictOf(%q, %q) = false", got, c.name)
		}
	}
	long := strings.Repeat("x", 250) + ".txt"
	got := ConflictName(long, 2, now)
	if len(got) != 255 || !strings.HasSuffix(got, ".txt") || !IsConflictOf(got, long) {
		t.Errorf("long name: %d bytes %q", len(got), got)
	}
	for _, c := range [][2]string{
		{"report.pdf", "report.pdf"},
		{"other (conflict 2026-03-04 050607).pdf", "report.pdf"},
		{"report (conflict soon).pdf", "report.pdf"},
		{"report (conflict 2026-03-04 050607).txt", "report.pdf"},
	} {
		if IsConflictOf(c[0], c[1]) {
			t.Errorf("IsConflictOf(%q, %q) = true", c[0], c[1])
		}
	}
}
