package ctlsock

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	kfs "kumo/fs"
)

// Progress is what a daemon reports while it waits for uploads.
type Progress struct {
	Files     int    // files with data not uploaded yet
	Bytes     int64  // their bytes not uploaded yet
	Ops       int    // tree changes not pushed yet
	Uploading int    // uploads running now
	State     string // "online" or "offline since HH:MM:SS"
	Note      string // e.g. the quota is exceeded
	LastError string // the last error while offline
}

// Pending reports whether anything still waits for the cloud.
func (p Progress) Pending() bool { return p.Files > 0 || p.Bytes > 0 || p.Ops > 0 || p.Uploading > 0 }

// FromStatus summarizes a drive's status: the work a flush waits for, the
// drive's own queue and its shared folders' drives'.
func FromStatus(s kfs.Status) Progress {
	q := s.Pending()
	p := Progress{Files: q.Files, Bytes: q.Bytes, Ops: q.Ops, Uploading: q.Uploading, State: "online"}
	if !s.Online {
		p.State = "offline since " + s.OfflineSince.Format(time.TimeOnly)
		p.LastError = s.LastError
	}
	if s.QuotaBlocked {
		p.Note = "quota exceeded: top up to continue"
	}
	return p
}

func (p Progress) encode() string {
	line := fmt.Sprintf("files=%d bytes=%d ops=%d uploading=%d state=%q", p.Files, p.Bytes, p.Ops, p.Uploading, p.State)
	if p.Note != "" {
		line += fmt.Sprintf(" note=%q", p.Note)
	}
	if p.LastError != "" {
		line += fmt.Sprintf(" last_error=%q", oneLine(p.LastError))
	}
	return line
}

// parseProgress decodes the K=V list of a "progress" line. Unknown keys are
// skipped (a newer daemon may say more).
func parseProgress(s string) (Progress, error) {
	var p Progress
	kv, err := parseKV(s)
	if err != nil {
		return p, err
	}
	for k, v := range kv {
		var err error
		switch k {
		case "files":
			p.Files, err = strconv.Atoi(v)
		case "bytes":
			p.Bytes, err = strconv.ParseInt(v, 10, 64)
		case "ops":
			p.Ops, err = strconv.Atoi(v)
		case "uploading":
			p.Uploading, err = strconv.Atoi(v)
		case "state":
			p.State = v
		case "note":
			p.Note = v
		case "last_error":
			p.LastError = v
		}
		if err != nil {
			return p, fmt.Errorf("progress %s: %w", k, err)
		}
	}
	return p, nil
}

const greetingPrefix = "kumo-control 1 "

func greeting(pid int, mountpoint string) string {
	return greetingPrefix + fmt.Sprintf("pid=%d mountpoint=%q", pid, mountpoint)
}

// parseGreeting returns the daemon's pid and mount point.
func parseGreeting(line string) (int, string, error) {
	rest, ok := strings.CutPrefix(line, greetingPrefix)
	if !ok {
		return 0, "", fmt.Errorf("not a kumo control socket greeting: %q", line)
	}
	kv, err := parseKV(rest)
	if err != nil {
		return 0, "", err
	}
	pid, err := strconv.Atoi(kv["pid"])
	if err != nil || pid <= 0 {
		return 0, "", fmt.Errorf("greeting without a valid pid: %q", line)
	}
	mnt, ok := kv["mountpoint"]
	if !ok || mnt == "" {
		return 0, "", fmt.Errorf("greeting without a mount point: %q", line)
	}
	return pid, mnt, nil
}

// parseKV splits `a=1 b="x y"` (values bare or Go-quoted).
func parseKV(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"") {
			return nil, fmt.Errorf("malformed field in %q", s)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
			if v, err = strconv.Unquote(q); err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		out[k] = v
		s = rest
	}
	return out, nil
}
