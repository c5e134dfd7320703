package meta

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// ConflictName returns the name a conflict copy of name gets:
// "NAME (conflict YYYY-MM-DD HHMMSS).EXT", with " N" after the time for the
// n-th try (n > 1), shortened to fit the 255-byte name limit. The drive
// (fs) and the CLI's restore share it so every conflict copy looks alike.
func ConflictName(name string, n int, now time.Time) string {
	stem, ext := conflictStem(name)
	tag := " (conflict " + now.Format("2006-01-02 150405")
	if n > 1 {
		tag += fmt.Sprintf(" %d", n)
	}
	tag += ")"
	if over := len(stem) + len(tag) + len(ext) - 255; over > 0 {
		stem = stem[:max(0, len(stem)-over)]
	}
	return stem + tag + ext
}

// IsConflictOf reports whether cname is a conflict copy name ConflictName
// gives name (at any time, any try).
func IsConflictOf(cname, name string) bool {
	stem, ext := conflictStem(name)
	rest, ok := strings.CutSuffix(cname, ext)
	if !ok {
		return false
	}
	i := strings.LastIndex(rest, " (conflict ")
	if i < 0 || !strings.HasSuffix(rest, ")") || !strings.HasPrefix(stem, rest[:i]) {
		return false
	}
	// The stem may have been shortened to fit; what follows must be the tag.
	tag := rest[i+len(" (conflict ") : len(rest)-1]
	if len(tag) < len("2006-01-02 150405") {
		return false
	}
	_, err := time.Parse("2006-01-02 150405", tag[:len("2006-01-02 150405")])
	return err == nil && (rest[:i] == stem || len(cname) >= 250)
}

func conflictStem(name string) (stem, ext string) {
	ext = path.Ext(name)
	if ext == name || len(ext) > 16 {
		ext = ""
	}
	return strings.TrimSuffix(name, ext), ext
}
