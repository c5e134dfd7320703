// Package control is the drive's control surface: the status report shown by the
// virtual files .kumo (text) and .kumo.json (JSON, a stable schema), the commands
// a user writes into .kumo, and the QR code of an open top-up invoice.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"kumo/internal/size"
)

// Virtual file names at the mount root. They never appear in readdir and are never stored remotely.
const (
	FileText = ".kumo"
	FileJSON = ".kumo.json"
	FileQR   = ".kumo-topup.png"
)

// IsReserved reports whether name is one of the control files' names.
func IsReserved(name string) bool {
	return name == FileText || name == FileJSON || name == FileQR
}

// SchemaVersion is bumped on any incompatible change of the JSON report.
const SchemaVersion = 1

// Status is everything the report shows. Its JSON form is the .kumo.json schema.
type Status struct {
	Schema      int            `json:"schema"`
	Account     string         `json:"account"`
	Server      string         `json:"server"` // "embedded" for the in-process cloud
	Quota       Quota          `json:"quota"`
	Cache       Cache          `json:"cache"`
	Uploads     Uploads        `json:"uploads"`
	Connection  Connection     `json:"connection"`
	Invoices    []Invoice      `json:"invoices"`
	LastCommand *CommandResult `json:"last_command,omitempty"`
	Integrity   Integrity      `json:"integrity"`
	History     History        `json:"history"`
	Shares      *Shares        `json:"shares,omitempty"` // folders of other accounts shared with this one
	// Links are the links `link PATH` made since the mount, newest first
	// (the one being made, then the last ones done), apart from
	// LastCommand so a later command does not hide a URL.
	Links []Link `json:"links,omitempty"`
}

// Link is one `link PATH` of this mount: being made (Running, Message says
// how far), made (URL), or failed (Error). At is when it started while it
// runs, then when it ended.
type Link struct {
	Path    string    `json:"path"`
	Running bool      `json:"running,omitempty"`
	URL     string    `json:"url,omitempty"`     // holds the link's secret: never logged
	Message string    `json:"message,omitempty"` // progress, or a note on the link made
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// Shares are the folders other accounts shared with this one: those joined
// (shown in the drive under Dir) and the invitations not accepted yet.
type Shares struct {
	Dir         string            `json:"dir"` // e.g. "Shared": MNT/Shared/NAME
	Joined      []JoinedShare     `json:"joined"`
	Invitations []ShareInvitation `json:"invitations"`
}

type JoinedShare struct {
	Name  string `json:"name"` // OWNER_EMAIL/FOLDER
	Path  string `json:"path"` // where it is in the drive
	Role  string `json:"role"`
	Share string `json:"share"` // 16 hex digits
	// Its drive: changes not pushed yet (files and tree operations), the
	// owner's quota refused uploads, records refused from the cloud
	// (failing authentication: EIO), and why it did not open ("" if it did).
	Queued    int    `json:"queued"`
	QuotaFull bool   `json:"quota_full"`
	Refused   int64  `json:"refused"`
	Error     string `json:"error,omitempty"`
}

type ShareInvitation struct {
	Name        string `json:"name"` // OWNER_EMAIL/FOLDER: kumo share accept NAME
	Share       string `json:"share"`
	Role        string `json:"role"`
	Fingerprint string `json:"fingerprint"` // of the owner's identity keys: compare with their kumo whoami
	KeyChanged  string `json:"key_changed,omitempty"`
}

// History is what the cloud keeps of the past (MNT/.kumo-history, kumo
// restore, kumo trash). Zero RetentionDays: history is off.
type History struct {
	Used          int64      `json:"used"` // bytes kept only for history, part of quota.used
	RetentionDays float64    `json:"retention_days"`
	From          *time.Time `json:"from"`  // the oldest moment a snapshot can show
	Freed         *time.Time `json:"freed"` // when the oldest history last gave way to new data on a full quota
}

// Integrity counts what the cloud sent that the drive refused since the mount.
type Integrity struct {
	AuthFailures int64      `json:"auth_failures"` // records that failed authentication (forged, swapped, corrupted)
	Rollbacks    int64      `json:"rollbacks"`     // older revisions of a node than one already seen
	Last         string     `json:"last,omitempty"`
	LastAt       *time.Time `json:"last_at,omitempty"`
}

type Quota struct {
	Used        int64      `json:"used"`         // bytes stored in the cloud plus queued uploads
	Limit       int64      `json:"limit"`        // bytes
	PlanExpires *time.Time `json:"plan_expires"` // null: no plan
	ReadOnly    bool       `json:"read_only"`    // plan expired while over quota
	Full        bool       `json:"full"`         // the server refused an upload for quota
}

// Cache is the drive's local store. Hits and misses count the reads that
// reach the drive, per 64 KiB segment: a hit is served on this machine
// (data not uploaded yet, a chunk still in memory, the chunk cache), a miss
// asks the cloud. Reads the kernel's page cache answers are not counted.
type Cache struct {
	Bytes     int64   `json:"bytes"`      // cached chunk data
	TreeBytes int64   `json:"tree_bytes"` // the local tree's store (with its preallocated logs); the budget covers both
	Budget    int64   `json:"budget"`
	Hits      uint64  `json:"hits"`
	Misses    uint64  `json:"misses"`
	HitRate   float64 `json:"hit_rate"` // 0..1
}

type Uploads struct {
	Files  int        `json:"files"`
	Bytes  int64      `json:"bytes"`
	Ops    int        `json:"ops"`    // metadata operations not yet pushed
	Oldest *time.Time `json:"oldest"` // null: nothing queued
	// LastError is the last failure to reach the cloud while something is
	// queued, and LastErrorAt when it happened.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Refused counts the changes the cloud refused for good since the
	// mount (a change too big for a request, attributes over the server's
	// limit, the account's node cap); RefusedOps lists the newest. Each is
	// out of the queue: the ones behind it went on.
	Refused    int64       `json:"refused,omitempty"`
	RefusedOps []RefusedOp `json:"refused_ops,omitempty"`
}

// RefusedOp is a change the cloud will never accept, as the report shows it.
type RefusedOp struct {
	At     time.Time `json:"at"`
	Op     string    `json:"op"`             // create, update, rename, link, unlink
	Node   uint64    `json:"node,omitempty"` // the node it changed, if known
	Path   string    `json:"path,omitempty"` // where it is in the mount, if known
	Reason string    `json:"reason"`         // the cloud's answer
	Kept   string    `json:"kept"`           // what became of the change on this machine
}

// Connection is the link to the cloud. An error is cleared once the cloud
// answers again after being unreachable.
type Connection struct {
	State        string     `json:"state"`         // "online", "offline", "retrying"
	OfflineSince *time.Time `json:"offline_since"` // null while online
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
}

// At is t for the report: nil (null in JSON) when unset.
func At(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Invoice is a Bitcoin top-up as the drive shows it.
type Invoice struct {
	ID            string    `json:"id"`
	Bytes         int64     `json:"bytes"`
	Months        int       `json:"months"`
	AmountBTC     string    `json:"amount_btc"`
	PaidBTC       string    `json:"paid_btc,omitempty"`
	Address       string    `json:"address"`
	URI           string    `json:"uri"`   // BIP21
	State         string    `json:"state"` // New, Processing, Settled, Expired, Invalid
	Flags         []string  `json:"flags,omitempty"`
	Confirmations int       `json:"confirmations"`
	Required      int       `json:"required_confirmations"`
	Expires       time.Time `json:"expires"`
}

// CommandResult is the outcome of the last command written to .kumo.
type CommandResult struct {
	Command string    `json:"command"`
	Running bool      `json:"running,omitempty"` // still at work (restore): Message says how far
	OK      bool      `json:"ok"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// JSON renders the .kumo.json content.
func JSON(s Status) []byte {
	s.Schema = SchemaVersion
	if s.Invoices == nil {
		s.Invoices = []Invoice{}
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}

// Text renders the human report of .kumo.
func Text(s Status) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "kumo drive\n\n")
	fmt.Fprintf(&b, "account     %s\n", s.Account)
	fmt.Fprintf(&b, "server      %s\n", s.Server)
	fmt.Fprintf(&b, "quota       %s %s of %s (%s)\n", bar(s.Quota.Used, s.Quota.Limit, 20),
		size.Format(s.Quota.Used), size.Format(s.Quota.Limit), percent(s.Quota.Used, s.Quota.Limit))
	if s.Quota.PlanExpires != nil {
		fmt.Fprintf(&b, "plan until  %s\n", s.Quota.PlanExpires.UTC().Format("2006-01-02"))
	}
	switch {
	case s.Quota.ReadOnly:
		fmt.Fprintf(&b, "            READ-ONLY: plan expired while over quota; top up to write again\n")
	case s.Quota.Full:
		fmt.Fprintf(&b, "            quota full: top up to continue (uploads are kept queued)\n")
	}
	if h := s.History; h.RetentionDays > 0 {
		fmt.Fprintf(&b, "history     %s kept for %g days, back to %s (see .kumo-history)\n", size.Format(h.Used), h.RetentionDays, at(h.From))
		if h.Freed != nil {
			fmt.Fprintf(&b, "            oldest history freed at %s to make room for new data (quota full)\n", at(h.Freed))
		}
	} else {
		fmt.Fprintf(&b, "history     off: deleted and overwritten data cannot be brought back\n")
	}
	fmt.Fprintf(&b, "cache       %s of chunks, local tree %s (budget %s for both)\n",
		size.Format(s.Cache.Bytes), size.Format(s.Cache.TreeBytes), size.Format(s.Cache.Budget))
	if n := s.Cache.Hits + s.Cache.Misses; n > 0 {
		fmt.Fprintf(&b, "            hit rate %.0f%%: %d of %d reads served on this machine (data not uploaded yet, chunks in memory or cached), %d from the cloud; the page cache's are not counted\n",
			100*s.Cache.HitRate, s.Cache.Hits, n, s.Cache.Misses)
	} else {
		fmt.Fprintf(&b, "            hit rate n/a: no read has reached the drive yet (the page cache's are not counted)\n")
	}
	up := fmt.Sprintf("%d files, %s, %d metadata ops", s.Uploads.Files, size.Format(s.Uploads.Bytes), s.Uploads.Ops)
	if s.Uploads.Oldest != nil {
		up += ", oldest " + s.Uploads.Oldest.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "uploads     %s\n", up)
	if s.Uploads.LastError != "" {
		fmt.Fprintf(&b, "            last error%s: %s\n", at(s.Uploads.LastErrorAt), s.Uploads.LastError)
	}
	if s.Uploads.Refused > 0 {
		fmt.Fprintf(&b, "refused     %d change(s) the cloud will never accept (the changes behind them went on):\n", s.Uploads.Refused)
		for _, r := range s.Uploads.RefusedOps {
			where := r.Path
			if where == "" {
				where = fmt.Sprintf("node %d", r.Node)
			}
			fmt.Fprintf(&b, "            %s %s %s: %s; %s\n", r.At.UTC().Format(time.RFC3339), r.Op, where, r.Reason, r.Kept)
		}
	}
	conn := s.Connection.State
	if s.Connection.OfflineSince != nil && s.Connection.State != "online" {
		conn += " since " + s.Connection.OfflineSince.UTC().Format(time.RFC3339)
	}
	if s.Connection.LastError != "" {
		conn += " (last error" + at(s.Connection.LastErrorAt) + ": " + s.Connection.LastError + ")"
	}
	fmt.Fprintf(&b, "connection  %s\n", conn)
	if g := s.Integrity; g.AuthFailures+g.Rollbacks > 0 {
		fmt.Fprintf(&b, "integrity   REFUSED from the cloud: %d record(s) failing authentication, %d rollback(s); files affected read as I/O errors or keep their newer local version\n",
			g.AuthFailures, g.Rollbacks)
		if g.LastAt != nil {
			fmt.Fprintf(&b, "            last at %s: %s\n", g.LastAt.UTC().Format(time.RFC3339), g.Last)
		}
		fmt.Fprintf(&b, "            the server (or something between it and you) changed data it cannot forge: see the drive's log\n")
	}
	if len(s.Invoices) > 0 {
		fmt.Fprintf(&b, "\ntop-ups\n")
	}
	for _, inv := range s.Invoices {
		fmt.Fprintf(&b, "  %s  %s for %d month(s): %s BTC  %s", inv.ID, size.Format(inv.Bytes), inv.Months, inv.AmountBTC, inv.State)
		if len(inv.Flags) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(inv.Flags, ", "))
		}
		fmt.Fprintf(&b, "  %d/%d confirmations\n", inv.Confirmations, inv.Required)
		fmt.Fprintf(&b, "      address %s\n      pay     %s\n      expires %s\n", inv.Address, inv.URI, inv.Expires.UTC().Format(time.RFC3339))
		if inv.PaidBTC != "" {
			fmt.Fprintf(&b, "      paid    %s BTC\n", inv.PaidBTC)
		}
	}
	if sh := s.Shares; sh != nil && len(sh.Joined)+len(sh.Invitations) > 0 {
		fmt.Fprintf(&b, "\nshared with you\n")
		for _, j := range sh.Joined {
			fmt.Fprintf(&b, "  %s  %s (%s)  in %s", j.Share, j.Name, j.Role, j.Path)
			if j.Queued > 0 {
				fmt.Fprintf(&b, ", %d change(s) not pushed yet", j.Queued)
			}
			if j.QuotaFull {
				fmt.Fprintf(&b, ", the OWNER's quota is full: uploads wait")
			}
			if j.Refused > 0 {
				fmt.Fprintf(&b, ", %d record(s) from the cloud REFUSED (failing authentication: I/O errors)", j.Refused)
			}
			if j.Error != "" {
				fmt.Fprintf(&b, ", NOT OPEN: %s", j.Error)
			}
			fmt.Fprintf(&b, "\n")
		}
		for _, in := range sh.Invitations {
			fmt.Fprintf(&b, "  %s  %s (%s)  INVITATION, owner's key fingerprint %s\n", in.Share, in.Name, in.Role, in.Fingerprint)
			if in.KeyChanged != "" {
				fmt.Fprintf(&b, "      the owner's keys CHANGED since first seen: %s\n", in.KeyChanged)
			}
		}
		if len(sh.Invitations) > 0 {
			fmt.Fprintf(&b, "  accept with kumo share accept NAME (compare the fingerprint with the owner's kumo whoami first)\n")
		}
	}
	if len(s.Links) > 0 {
		fmt.Fprintf(&b, "\nlinks made since the mount (read-only snapshots: anyone with a URL can read it)\n")
		for _, l := range s.Links {
			fmt.Fprintf(&b, "  %s  %s  ", l.At.UTC().Format(time.RFC3339), l.Path)
			switch {
			case l.Running:
				fmt.Fprintf(&b, "RUNNING: %s\n", l.Message)
			case l.Error != "":
				fmt.Fprintf(&b, "FAILED: %s\n", l.Error)
			case l.Message != "":
				fmt.Fprintf(&b, "%s %s\n", l.URL, l.Message)
			default:
				fmt.Fprintf(&b, "%s\n", l.URL)
			}
		}
	}
	if c := s.LastCommand; c != nil {
		res := "ok"
		switch {
		case c.Running:
			res = "RUNNING"
		case !c.OK:
			res = "FAILED"
		}
		fmt.Fprintf(&b, "\nlast command  %q %s: %s\n", c.Command, res, c.Message)
	}
	fmt.Fprintf(&b, "\ncommands: echo 'topup 10GiB [MONTHS]' | 'redeem CODE' | 'sync' | 'refresh' | 'restore PATH TIME [force]' | 'link PATH' | 'share accept NAME' > %s\n", FileText)
	return []byte(b.String())
}

// at is " at TIME" for a set time.
func at(t *time.Time) string {
	if t == nil {
		return ""
	}
	return " at " + t.UTC().Format(time.RFC3339)
}

func percent(used, limit int64) string {
	if limit <= 0 {
		return "no quota"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(used)/float64(limit))
}

func bar(used, limit int64, width int) string {
	n := 0
	if limit > 0 {
		n = int(float64(width) * float64(used) / float64(limit))
	}
	n = max(0, min(n, width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// Command kinds.
const (
	CmdTopup   = "topup"
	CmdRedeem  = "redeem"
	CmdSync    = "sync"
	CmdRefresh = "refresh"
	CmdRestore = "restore" // restore PATH TIME [force]
	CmdLink    = "link"    // link PATH
	// CmdShareAccept accepts an invitation to a shared folder:
	// "share accept NAME" (NAME: OWNER_EMAIL/FOLDER or the share's id).
	CmdShareAccept = "share accept"
)

// Command is one parsed line written to .kumo.
type Command struct {
	Kind   string
	Bytes  int64     // topup
	Months int       // topup, default 1
	Code   string    // redeem
	Path   string    // restore, link: a path in the drive ("/" or "" is the root)
	At     time.Time // restore
	Force  bool      // restore: make PATH exactly as at At
	Share  string    // share accept: OWNER_EMAIL/FOLDER or 16 hex digits
}

// ErrCommand wraps every parse failure; the drive answers EINVAL.
var ErrCommand = errors.New("bad command")

// MaxTopupMonths bounds a single purchase.
const MaxTopupMonths = 36

// ParseCommand parses one line ("topup 100GiB 3", "redeem CODE", "sync", "refresh").
func ParseCommand(line string) (Command, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return Command{}, fmt.Errorf("%w: empty; try 'topup 10GiB', 'redeem CODE', 'sync', 'refresh', 'restore PATH TIME' or 'link PATH'", ErrCommand)
	}
	switch f[0] {
	case CmdRestore:
		// PATH may hold spaces: TIME (and "force") are the last fields.
		rest := f[1:]
		force := len(rest) > 0 && rest[len(rest)-1] == "force"
		if force {
			rest = rest[:len(rest)-1]
		}
		if len(rest) < 2 {
			return Command{}, fmt.Errorf("%w: usage: restore PATH TIME [force], e.g. restore /docs 2026-12-05T10:00:00Z", ErrCommand)
		}
		t, err := time.Parse(time.RFC3339Nano, rest[len(rest)-1])
		if err != nil {
			return Command{}, fmt.Errorf("%w: restore: TIME must be RFC 3339, e.g. 2026-12-05T10:00:00Z or 2026-12-05T11:00:00+01:00", ErrCommand)
		}
		return Command{Kind: CmdRestore, Path: strings.Join(rest[:len(rest)-1], " "), At: t, Force: force}, nil
	case CmdLink:
		if len(f) < 2 {
			return Command{}, fmt.Errorf("%w: usage: link PATH", ErrCommand)
		}
		return Command{Kind: CmdLink, Path: strings.Join(f[1:], " ")}, nil
	case "share":
		if len(f) < 3 || f[1] != "accept" {
			return Command{}, fmt.Errorf("%w: usage: share accept OWNER_EMAIL/FOLDER (see the invitations above)", ErrCommand)
		}
		return Command{Kind: CmdShareAccept, Share: strings.Join(f[2:], " ")}, nil
	case CmdSync, CmdRefresh:
		if len(f) != 1 {
			return Command{}, fmt.Errorf("%w: %s takes no arguments", ErrCommand, f[0])
		}
		return Command{Kind: f[0]}, nil
	case CmdRedeem:
		if len(f) != 2 || len(f[1]) > 100 {
			return Command{}, fmt.Errorf("%w: usage: redeem CODE", ErrCommand)
		}
		return Command{Kind: CmdRedeem, Code: f[1]}, nil
	case CmdTopup:
		if len(f) < 2 || len(f) > 3 {
			return Command{}, fmt.Errorf("%w: usage: topup SIZE [MONTHS], e.g. topup 100GiB 3", ErrCommand)
		}
		n, err := size.Parse(f[1])
		if err != nil || n <= 0 {
			return Command{}, fmt.Errorf("%w: topup: bad size %q (e.g. 100GiB)", ErrCommand, f[1])
		}
		months := 1
		if len(f) == 3 {
			months, err = strconv.Atoi(f[2])
			if err != nil || months < 1 || months > MaxTopupMonths {
				return Command{}, fmt.Errorf("%w: topup: months must be 1..%d", ErrCommand, MaxTopupMonths)
			}
		}
		return Command{Kind: CmdTopup, Bytes: n, Months: months}, nil
	}
	return Command{}, fmt.Errorf("%w: unknown command %q; try 'topup 10GiB', 'redeem CODE', 'sync', 'refresh', 'restore PATH TIME' or 'link PATH'", ErrCommand, f[0])
}

// EmbeddedTopupHelp is the answer to a top-up on the embedded cloud in
// dir, mounted at mnt ("" if not mounted): it takes no payments, and its
// user is its operator.
func EmbeddedTopupHelp(dir, mnt string) string {
	redeem := "kumo redeem CODE"
	if mnt != "" {
		redeem = fmt.Sprintf("echo 'redeem CODE' > %s/%s", mnt, FileText)
	}
	return fmt.Sprintf("the embedded cloud takes no payments, and you are its operator: its room is this disk's free space (df shows it). "+
		"To give it more quota, unmount the drive and run kumo admin --data %s voucher create --quota 50GiB --days 365, mount again and %s "+
		"(or set it: kumo admin --data %s quota --email local@kumo.localhost --limit SIZE). "+
		"To take Bitcoin, run it as a server instead: kumo serve --data %s --btc-xpub XPUB, then kumo login and kumo mount --server URL",
		dir, redeem, dir, dir)
}

// QRPNG renders a BIP21 URI as a PNG QR code a phone wallet can scan.
func QRPNG(uri string) ([]byte, error) {
	return qrcode.Encode(uri, qrcode.Medium, 320)
}

// QRTerminal renders a BIP21 URI as a QR code in terminal block characters.
func QRTerminal(uri string) (string, error) {
	q, err := qrcode.New(uri, qrcode.Medium)
	if err != nil {
		return "", err
	}
	return q.ToSmallString(false), nil
}
