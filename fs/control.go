package fs

// The control files at the mount root: .kumo (text report; commands are
// written to it), .kumo.json (the same report as JSON) and .kumo-topup.png
// (QR code of the newest open invoice). They are virtual: resolved by
// Lookup, never listed, never stored in the local tree, the journal or the
// cloud.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/internal/control"
	"kumo/internal/size"
	"kumo/remote/api"
)

type ctlKind uint64

const (
	ctlText ctlKind = iota + 1
	ctlJSON
	ctlQR
)

// ctlInoBase: node ids are 63-bit numbers, so inode numbers with the top
// bit set never collide with a real node.
const ctlInoBase = uint64(1) << 63

const (
	invoiceTTL     = time.Second             // how long a fetched invoice list is shown without asking again
	invoiceFetch   = 1500 * time.Millisecond // an Open waits this long at most for the invoice list
	commandTimeout = 30 * time.Second
	maxCommandLine = 4096
	maxInvoices    = 10 // newest shown in the report
)

const (
	// A background command (link, restore) fails once the cloud has been
	// unreachable this long while it runs (Options.CommandOffline), and
	// shutdown waits this long at most for background commands to stop.
	defaultCommandOffline = 2 * time.Minute
	backgroundStopWait    = 10 * time.Second
)

func ctlKindOf(name string) ctlKind {
	switch name {
	case control.FileText:
		return ctlText
	case control.FileJSON:
		return ctlJSON
	case control.FileQR:
		return ctlQR
	}
	return 0
}

// controlState is the drive's memory for the control files.
type controlState struct {
	mu       sync.Mutex
	last     *control.CommandResult
	invoices []api.Invoice // newest first, as the server lists them
	invAt    time.Time     // when fetched; zero: refetch at the next open
	qrURI    string        // the URI qrPNG encodes
	qrPNG    []byte

	linkNow *control.Link  // the link being made, nil if none
	links   []control.Link // links made (or failed) since the mount, newest first, at most maxLinks

	refusedN int64               // changes the cloud refused for good since the mount
	refused  []control.RefusedOp // the newest maxRefused of them, oldest first

	fetchMu sync.Mutex // one invoice fetch at a time

	bg       sync.WaitGroup // background commands (link, restore) running
	stopWait time.Duration  // how long shutdown waits for them; 0: backgroundStopWait (tests wait less)
}

// maxRefused is how many refused changes the report lists.
const maxRefused = 20

func (c *controlState) addRefused(r control.RefusedOp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refusedN++
	if len(c.refused) == maxRefused {
		c.refused = append(c.refused[:0], c.refused[1:]...)
	}
	c.refused = append(c.refused, r)
}

func (c *controlState) staleInvoices() {
	c.mu.Lock()
	c.invAt = time.Time{}
	c.mu.Unlock()
}

func (c *controlState) record(cmd string, ok bool, msg string) {
	c.mu.Lock()
	c.last = &control.CommandResult{Command: cmd, OK: ok, Message: msg, At: time.Now().UTC()}
	c.mu.Unlock()
}

// maxLinks is how many finished links the report lists.
const maxLinks = 10

// linkRunning shows how far the link of path being made (command cmd) is,
// in its line of the links and as the last command, in one update.
func (c *controlState) linkRunning(cmd, path, msg string) {
	now := time.Now().UTC()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.linkNow == nil {
		c.linkNow = &control.Link{Path: path, Running: true, At: now}
	}
	c.linkNow.Message = msg
	c.last = &control.CommandResult{Command: cmd, Running: true, OK: true, Message: msg, At: now}
}

// linkDone lists the link being made as done: its URL (note: what to know
// about it), or the error that ended it.
func (c *controlState) linkDone(path, url, note string, err error) {
	l := control.Link{Path: path, URL: url, Message: note, At: time.Now().UTC()}
	if err != nil {
		l.Error = err.Error()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.linkNow = nil
	c.links = append([]control.Link{l}, c.links[:min(len(c.links), maxLinks-1)]...)
}

// running records the progress of a command still at work.
func (c *controlState) running(cmd, msg string) {
	c.mu.Lock()
	c.last = &control.CommandResult{Command: cmd, Running: true, OK: true, Message: msg, At: time.Now().UTC()}
	c.mu.Unlock()
}

// invoiceList returns the account's invoices: the cached list, refetched
// first when fetch is set and it is older than invoiceTTL (never while
// offline, never for longer than invoiceFetch).
func (d *Drive) invoiceList(ctx context.Context, fetch bool) []api.Invoice {
	c := d.ctl
	c.mu.Lock()
	invs, at := c.invoices, c.invAt
	c.mu.Unlock()
	if !fetch || time.Since(at) < invoiceTTL {
		return invs
	}
	d.stat.Lock()
	online := d.stat.online
	d.stat.Unlock()
	if !online {
		return invs
	}
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	c.mu.Lock()
	invs, at = c.invoices, c.invAt
	c.mu.Unlock()
	if time.Since(at) < invoiceTTL {
		return invs // fetched while we waited
	}
	ctx, cancel := context.WithTimeout(ctx, invoiceFetch)
	defer cancel()
	got, err := d.c.Invoices(ctx)
	if err != nil {
		d.log.Debug("control file: listing invoices", "err", err)
		if errors.Is(err, api.ErrUnavailable) {
			d.noteErr(err) // the report then says offline, even before the workers notice
		}
		return invs
	}
	d.noteOnline()
	if newlySettled(invs, got) {
		// The cloud credits the quota before it shows the invoice Settled:
		// the account read now has the credit, so the report never shows a
		// paid invoice beside the quota from before it. Without the
		// account, the new list is not taken either: the report keeps the
		// one before, and the next fetch tries both again.
		a, err := d.c.Account(ctx)
		if err != nil {
			d.log.Debug("control file: reading the account after a settled invoice; showing the invoices from before until it can be read", "err", err)
			return invs
		}
		d.setAccount(a)
	}
	c.mu.Lock()
	c.invoices, c.invAt = got, time.Now()
	c.mu.Unlock()
	return got
}

// newlySettled reports whether an invoice of got is Settled that was not
// Settled in old (the list shown before).
func newlySettled(old, got []api.Invoice) bool {
	was := make(map[string]bool, len(old))
	for _, inv := range old {
		was[inv.ID] = inv.State == api.InvoiceSettled
	}
	for _, inv := range got {
		if inv.State == api.InvoiceSettled && !was[inv.ID] {
			return true
		}
	}
	return false
}

// openInvoice is the newest invoice still waiting for payment or confirmations.
func openInvoice(invs []api.Invoice) (api.Invoice, bool) {
	for _, inv := range invs {
		if inv.State == api.InvoiceNew || inv.State == api.InvoiceProcessing {
			return inv, true
		}
	}
	return api.Invoice{}, false
}

// ControlStatus is the report the control files show. fetch refreshes the
// invoice list from the cloud if it is older than a second.
func (d *Drive) ControlStatus(ctx context.Context, fetch bool) control.Status {
	invs := d.invoiceList(ctx, fetch) // first: a failure to reach the cloud shows in the status
	s := d.Status()
	cs := control.Status{
		Account: s.Account.Email,
		Server:  d.o.ServerName,
		Quota: control.Quota{Used: s.QuotaUsed, Limit: s.QuotaLimit, PlanExpires: control.At(s.Account.PlanExpires),
			ReadOnly: s.Account.ReadOnly, Full: s.QuotaBlocked},
		Cache: control.Cache{Bytes: s.Cache.Chunks, TreeBytes: s.Cache.Tree, Budget: s.Cache.Budget,
			Hits: s.Cache.Hits, Misses: s.Cache.Misses},
		Uploads: control.Uploads{Files: s.Queue.Files, Bytes: s.Queue.Bytes, Ops: s.Queue.Ops, Oldest: control.At(s.Queue.Oldest)},
		History: control.History{Used: s.Account.HistoryUsed, RetentionDays: s.Account.HistoryRetention.D().Hours() / 24,
			From: control.At(s.Account.HistoryFrom), Freed: control.At(s.Account.HistoryFreed)},
	}
	if cs.Server == "" {
		cs.Server = s.Server
	}
	if cs.Account == "" {
		cs.Account = "(unknown until the cloud answers)"
	}
	if n := s.Cache.Hits + s.Cache.Misses; n > 0 {
		cs.Cache.HitRate = float64(s.Cache.Hits) / float64(n)
	}
	busy := s.Queue.Files > 0 || s.Queue.Ops > 0
	if busy && s.LastError != "" {
		// Only while something waits: an error nothing waits on is over.
		cs.Uploads.LastError, cs.Uploads.LastErrorAt = s.LastError, control.At(s.LastErrorAt)
	}
	switch {
	case !s.Online:
		cs.Connection = control.Connection{State: "offline", OfflineSince: control.At(s.OfflineSince),
			LastError: s.LastError, LastErrorAt: control.At(s.LastErrorAt)}
	case busy && !s.QuotaBlocked && !s.LastErrorAt.IsZero() && time.Since(s.LastErrorAt) < time.Minute:
		cs.Connection = control.Connection{State: "retrying", LastError: s.LastError, LastErrorAt: control.At(s.LastErrorAt)}
	default:
		cs.Connection = control.Connection{State: "online"}
	}
	for i, inv := range invs {
		if i == maxInvoices {
			break
		}
		cs.Invoices = append(cs.Invoices, controlInvoice(inv))
	}
	d.ctl.mu.Lock()
	if l := d.ctl.last; l != nil {
		c := *l
		cs.LastCommand = &c
	}
	if l := d.ctl.linkNow; l != nil {
		cs.Links = append(cs.Links, *l)
	}
	cs.Links = append(cs.Links, d.ctl.links...)
	cs.Uploads.Refused = d.ctl.refusedN
	cs.Uploads.RefusedOps = append([]control.RefusedOp(nil), d.ctl.refused...)
	d.ctl.mu.Unlock()
	if g := d.Integrity(); g.AuthFailures+g.Rollbacks > 0 {
		cs.Integrity = control.Integrity{AuthFailures: g.AuthFailures, Rollbacks: g.Rollbacks, Last: g.Last, LastAt: &g.LastAt}
	}
	cs.Shares = d.controlShares(ctx, fetch) // sharemember.go
	return cs
}

func controlInvoice(inv api.Invoice) control.Invoice {
	ci := control.Invoice{ID: inv.ID, Bytes: inv.Bytes, Months: inv.Months, AmountBTC: inv.AmountBTC,
		Address: inv.Address, URI: inv.URI, State: inv.State, Flags: inv.Flags,
		Confirmations: inv.Confirmations, Required: inv.Required, Expires: inv.Expires}
	if inv.PaidSat > 0 {
		ci.PaidBTC = fmt.Sprintf("%d.%08d", inv.PaidSat/100_000_000, inv.PaidSat%100_000_000)
	}
	return ci
}

// controlContent renders one control file; ENOENT for the QR code when no
// invoice is open.
func (d *Drive) controlContent(ctx context.Context, k ctlKind, fetch bool) ([]byte, syscall.Errno) {
	switch k {
	case ctlText:
		return control.Text(d.ControlStatus(ctx, fetch)), 0
	case ctlJSON:
		return control.JSON(d.ControlStatus(ctx, fetch)), 0
	case ctlQR:
		inv, ok := openInvoice(d.invoiceList(ctx, fetch))
		if !ok || inv.URI == "" {
			return nil, syscall.ENOENT
		}
		c := d.ctl
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.qrURI != inv.URI {
			png, err := control.QRPNG(inv.URI)
			if err != nil {
				d.log.Error("control file: QR code", "invoice", inv.ID, "err", err)
				return nil, syscall.EIO
			}
			c.qrURI, c.qrPNG = inv.URI, png
		}
		return c.qrPNG, 0
	}
	return nil, syscall.ENOENT
}

// --- kernel side ---

// ctlNode is one control file.
type ctlNode struct {
	gofs.Inode
	d    *Drive
	kind ctlKind
}

// ctlHandle is an open control file: a snapshot taken at open for reads,
// a line buffer for commands.
type ctlHandle struct {
	data  []byte
	mu    sync.Mutex
	write bool
	buf   []byte
}

var (
	_ gofs.NodeGetattrer = (*ctlNode)(nil)
	_ gofs.NodeSetattrer = (*ctlNode)(nil)
	_ gofs.NodeOpener    = (*ctlNode)(nil)
	_ gofs.NodeReader    = (*ctlNode)(nil)
	_ gofs.NodeWriter    = (*ctlNode)(nil)
	_ gofs.NodeFlusher   = (*ctlNode)(nil)
	_ gofs.NodeFsyncer   = (*ctlNode)(nil)
)

// lookupControl resolves a reserved root name (fnode.Lookup).
func (d *Drive) lookupControl(ctx context.Context, root *fnode, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	k := ctlKindOf(name)
	if k == 0 {
		return nil, syscall.ENOENT
	}
	if k == ctlQR {
		if _, ok := openInvoice(d.invoiceList(ctx, true)); !ok {
			return nil, syscall.ENOENT
		}
	}
	d.ctlAttr(ctx, k, &out.Attr)
	out.SetAttrTimeout(0)
	ino := root.NewInode(ctx, &ctlNode{d: d, kind: k}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ctlInoBase + uint64(k)})
	return ino, 0
}

// owner is who may read and write the control files: the mount's owner.
func (d *Drive) owner() (uint32, uint32) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if d.o.UID != nil {
		uid = *d.o.UID
	}
	if d.o.GID != nil {
		gid = *d.o.GID
	}
	return uid, gid
}

func (d *Drive) ctlAttr(ctx context.Context, k ctlKind, out *fuse.Attr) {
	out.Ino = ctlInoBase + uint64(k)
	out.Mode = syscall.S_IFREG | 0o400
	if k == ctlText {
		out.Mode = syscall.S_IFREG | 0o600
	}
	out.Nlink = 1
	out.Uid, out.Gid = d.owner()
	now := uint64(time.Now().Unix())
	out.Atime, out.Mtime, out.Ctime = now, now, now
	out.Blksize = 4096
	// The current length, from what is known without asking the cloud;
	// reads use direct I/O and the snapshot taken at open, so a size that
	// moved since is harmless.
	if b, e := d.controlContent(ctx, k, false); e == 0 {
		out.Size = uint64(len(b))
		out.Blocks = (out.Size + 511) / 512
	}
}

func (n *ctlNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.d.ctlAttr(ctx, n.kind, &out.Attr)
	out.SetTimeout(0)
	return 0
}

// Setattr refuses every change except the truncation of .kumo that
// `echo CMD > .kumo` (O_TRUNC) brings: that one is a no-op.
func (n *ctlNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	_, hasSize := in.GetSize()
	onlySize := in.Valid&^(fuse.FATTR_SIZE|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0
	if n.kind != ctlText || !hasSize || !onlySize {
		return syscall.EPERM
	}
	n.d.ctlAttr(ctx, n.kind, &out.Attr)
	out.SetTimeout(0)
	return 0
}

func (n *ctlNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	d := n.d
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if c, ok := fuse.FromContext(ctx); ok {
		if uid, _ := d.owner(); c.Uid != 0 && c.Uid != uid {
			return nil, 0, syscall.EACCES
		}
	}
	if write && n.kind != ctlText {
		return nil, 0, syscall.EACCES
	}
	h := &ctlHandle{write: write}
	if flags&syscall.O_ACCMODE != syscall.O_WRONLY {
		b, e := d.controlContent(ctx, n.kind, true)
		if e != 0 {
			return nil, 0, e
		}
		h.data = b
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *ctlNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*ctlHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
}

// Write runs each complete line as a command; the offset is ignored (the
// file is a command stream, so O_APPEND and O_TRUNC both work).
func (n *ctlNode) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := f.(*ctlHandle)
	if !ok || !h.write {
		return 0, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = append(h.buf, data...)
	for {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			break
		}
		line := string(h.buf[:i])
		h.buf = h.buf[i+1:]
		if e := n.d.runCommand(line); e != 0 {
			h.buf = nil
			return 0, e
		}
	}
	if len(h.buf) > maxCommandLine {
		h.buf = nil
		n.d.badCommand("", "(a line of more than 4096 bytes)", errors.New("command line too long"))
		return 0, syscall.EINVAL
	}
	return uint32(len(data)), 0
}

// Flush runs a last line written without a newline (printf 'sync' > .kumo).
func (n *ctlNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	h, ok := f.(*ctlHandle)
	if !ok || !h.write {
		return 0
	}
	h.mu.Lock()
	line := string(h.buf)
	h.buf = nil
	h.mu.Unlock()
	if strings.TrimSpace(line) == "" {
		return 0
	}
	return n.d.runCommand(line)
}

func (n *ctlNode) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno { return 0 }

// --- commands ---

// redact hides all but the first 4 characters of what may be a voucher code
// (a bearer secret), also in lines that do not parse: everything after a
// redeem, however many words, and the whole of a line that is no command (a
// code pasted alone, a typo of "redeem"). topup, sync, refresh, restore,
// link and share accept lines are shown as they are.
func redact(line string) string {
	f := strings.Fields(line)
	var s string
	switch {
	case len(f) == 0:
	case f[0] == control.CmdTopup || f[0] == control.CmdSync || f[0] == control.CmdRefresh || f[0] == control.CmdRestore || f[0] == control.CmdLink ||
		len(f) > 1 && f[0]+" "+f[1] == control.CmdShareAccept:
		s = strings.Join(f, " ")
	case f[0] == control.CmdRedeem:
		s = strings.TrimSpace(f[0] + " " + redactMask(strings.Join(f[1:], " ")))
	default:
		s = redactMask(strings.Join(f, " "))
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func redactMask(w string) string {
	if len(w) <= 4 {
		return w
	}
	return w[:4] + strings.Repeat("*", len(w)-4)
}

// redactErr is the message of err about line, with the words redact hides
// hidden: the parser's message may quote them.
func redactErr(line string, err error) string {
	msg := err.Error()
	if f := strings.Fields(line); len(f) > 0 && redact(line) != strings.Join(f, " ") {
		for _, w := range f {
			if w != control.CmdRedeem {
				msg = strings.ReplaceAll(msg, w, redactMask(w))
			}
		}
	}
	return msg
}

// badCommand logs and records a line that does not parse.
func (d *Drive) badCommand(line, shown string, err error) {
	msg := redactErr(line, err)
	d.log.Warn("control file: bad command", "command", shown, "err", msg)
	d.ctl.record(shown, false, msg)
}

// runCommand runs one line written to .kumo. Errors:
//   - EINVAL: a line that does not parse, a topup the server finds invalid,
//     an unknown or already used voucher;
//   - ENOTSUP: topup on a server that does not take Bitcoin (it sells
//     nothing, so the operation is not supported there; vouchers still work);
//   - EAGAIN: too many unpaid invoices open;
//   - EBUSY: a link while another is being made, a restore while another
//     runs (last_command keeps showing the running one);
//   - EIO: the cloud could not be reached or failed.
//
// Blank lines are ignored. The outcome shows as last_command in the report.
func (d *Drive) runCommand(line string) syscall.Errno {
	if strings.TrimSpace(line) == "" {
		return 0
	}
	shown := redact(line)
	cmd, err := control.ParseCommand(line)
	if err != nil {
		d.badCommand(line, shown, err)
		return syscall.EINVAL
	}
	ctx, cancel := context.WithTimeout(d.ctx, commandTimeout)
	defer cancel()
	var msg string
	switch cmd.Kind {
	case control.CmdTopup:
		inv, err := d.c.Topup(ctx, api.TopupRequest{Bytes: cmd.Bytes, Months: cmd.Months})
		if err != nil {
			return d.commandFailed(shown, err)
		}
		d.ctl.mu.Lock()
		d.ctl.invoices = append([]api.Invoice{inv}, d.ctl.invoices...)
		d.ctl.mu.Unlock()
		// The kernel may remember that the QR code did not exist.
		// (Safe from a write: the kernel holds no lock on the root here.)
		d.notifyEntry(api.RootID, control.FileQR)
		msg = fmt.Sprintf("invoice %s: %s for %d month(s): pay %s BTC to %s (%s; QR code in %s)",
			inv.ID, size.Format(inv.Bytes), inv.Months, inv.AmountBTC, inv.Address, inv.URI, control.FileQR)
	case control.CmdRedeem:
		r, err := d.c.Redeem(ctx, cmd.Code)
		if err != nil {
			return d.commandFailed(shown, err)
		}
		d.noteOnline()
		d.setAccount(r.Account)
		msg = fmt.Sprintf("voucher redeemed: %s for %d days; quota now %s", size.Format(r.Bytes), r.Days, size.Format(r.Account.QuotaLimit))
	case control.CmdSync:
		d.mu.Lock()
		files := len(d.dirty)
		for _, st := range d.dirty {
			st.urgent = true
		}
		d.mu.Unlock()
		ops, _ := d.store.PendingCount()
		d.resumeQueue()
		kick(d.pullKick)
		msg = fmt.Sprintf("sync started: %d files and %d tree operations queued", files, ops)
	case control.CmdRestore:
		if d.busy(&d.restoring, shown, "a restore is running: wait for it (its progress is the last command in "+control.FileText+")") {
			return syscall.EBUSY
		}
		d.background(func(ctx context.Context) { d.restore(ctx, cmd, shown) }) // history.go: minutes for a big tree; progress in .kumo
		return 0
	case control.CmdLink:
		if d.c.InProcess() {
			return d.commandFailed(shown, errors.New("link: this drive's embedded cloud has no address others can reach: kumo login to a server and mount with --server URL to make links"))
		}
		if d.busy(&d.linking, shown, "a link is being made: wait for its URL (see links in "+control.FileText+"), then ask for the next") {
			return syscall.EBUSY
		}
		// Shown as running before the write returns, so a read right after sees it.
		d.ctl.linkRunning(shown, cmd.Path, linkWaiting)
		d.background(func(ctx context.Context) { d.makeLink(ctx, cmd, shown) }) // link.go: reads every chunk; progress, then the URL, in .kumo
		return 0
	case control.CmdShareAccept:
		if msg, err = d.acceptShare(ctx, cmd.Share); err != nil { // sharemember.go
			return d.commandFailed(shown, err)
		}
	case control.CmdRefresh:
		kick(d.pullKick)
		a, err := d.c.Account(ctx)
		if err != nil {
			d.noteErr(err)
			return d.commandFailed(shown, err)
		}
		d.noteOnline()
		d.setAccount(a)
		d.invoiceList(ctx, true)
		msg = fmt.Sprintf("refreshed: %s of %s used", size.Format(a.QuotaUsed), size.Format(a.QuotaLimit))
	}
	d.log.Info("control file: command done", "command", shown, "result", msg)
	d.ctl.record(shown, true, msg)
	return 0
}

// errUnreachable ends a background command whose cloud stayed unreachable.
var errUnreachable = errors.New("no answer from the cloud")

// unreachableError is the failure of a command that could not reach the
// cloud, saying so and what to do.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string {
	return "cloud unreachable: " + e.err.Error() + ": try again when online"
}

func (e *unreachableError) Unwrap() error { return e.err }

// unreachableErr says so of err if it came of an unreachable cloud.
func unreachableErr(err error) error {
	var u *unreachableError
	if errors.As(err, &u) || !errors.Is(err, errUnreachable) && !errors.Is(err, api.ErrUnavailable) {
		return err
	}
	return &unreachableError{err}
}

// background runs a long control command (link, restore) on a goroutine
// with a context of its own, which ends when the drive shuts down (that
// waits for it: waitBackground) or when the cloud has been unreachable for
// the offline limit while it runs: then it fails, saying so, instead of
// waiting for the cloud for ever (a flush of pending uploads would).
func (d *Drive) background(run func(ctx context.Context)) {
	ctx, cancel := context.WithCancelCause(d.ctx)
	d.ctl.bg.Add(1)
	go func() {
		defer d.ctl.bg.Done()
		defer cancel(nil)
		go d.watchOffline(ctx, cancel)
		run(ctx)
	}()
}

// watchOffline cancels ctx once the drive has been offline for the
// command offline limit since ctx's command started.
func (d *Drive) watchOffline(ctx context.Context, cancel context.CancelCauseFunc) {
	limit := d.o.CommandOffline
	if limit <= 0 {
		limit = defaultCommandOffline
	}
	start := time.Now()
	t := time.NewTicker(max(min(time.Second, limit/4), time.Millisecond)) // a tiny limit must not make a zero period (a panic)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.stat.Lock()
		online, since := d.stat.online, d.stat.offlineSince
		d.stat.Unlock()
		if since.Before(start) {
			since = start
		}
		if !online && time.Since(since) >= limit {
			cancel(fmt.Errorf("%w for %v", errUnreachable, limit))
			return
		}
	}
}

// waitBackground waits, at most backgroundStopWait, for the background
// commands to end once the drive's context is cancelled, and says whether
// they did: one still running must not find the store closed under it.
func (d *Drive) waitBackground() bool {
	done := make(chan struct{})
	go func() {
		d.ctl.bg.Wait()
		close(done)
	}()
	wait := d.ctl.stopWait
	if wait <= 0 {
		wait = backgroundStopWait
	}
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// busy marks the one-at-a-time background command that flag stands for as
// running, or says it already runs (the caller returns EBUSY). A refusal is
// logged only: last_command keeps the running command's progress, which a
// refusal shown there would hide (wait says what to wait for).
func (d *Drive) busy(flag *atomic.Bool, shown, wait string) bool {
	if flag.CompareAndSwap(false, true) {
		return false
	}
	d.log.Warn("control file: refused, "+wait, "command", shown)
	return true
}

// commandFailed records and logs a refused command and picks its errno.
func (d *Drive) commandFailed(shown string, err error) syscall.Errno {
	e := syscall.EIO
	err = unreachableErr(err)
	msg := err.Error()
	switch {
	case errors.Is(err, api.ErrPaymentsOff):
		e = syscall.ENOTSUP
		msg = "this server does not take Bitcoin (" + api.CodePaymentsOff + "): ask its operator for a voucher, then echo 'redeem CODE' > " + control.FileText
		if d.o.EmbeddedDir != "" {
			msg = control.EmbeddedTopupHelp(d.o.EmbeddedDir, d.mnt)
		}
	case errors.Is(err, api.ErrBadVoucher), errors.Is(err, api.ErrUsedVoucher), errors.Is(err, api.ErrBadRequest):
		e = syscall.EINVAL
	case errors.Is(err, api.ErrRateLimited):
		e = syscall.EAGAIN
	}
	d.log.Warn("control file: command failed", "command", shown, "err", err)
	d.ctl.record(shown, false, msg)
	return e
}
