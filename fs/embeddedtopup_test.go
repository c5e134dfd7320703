package fs

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestEmbeddedTopupHelp: a top-up on the embedded cloud fails with
// EOPNOTSUPP (as the README says) and one message that says how its user,
// who is its operator, adds quota with kumo admin or takes Bitcoin; a
// server's refusal says to ask the operator once.
func TestEmbeddedTopupHelp(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.EmbeddedDir = "/data/cloud" })
	if err := m.command("topup 1GiB"); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("topup on the embedded cloud: %v, want EOPNOTSUPP", err)
	}
	lc := m.report().LastCommand
	if lc == nil || lc.OK || !strings.Contains(lc.Message, "kumo admin --data /data/cloud voucher create") ||
		!strings.Contains(lc.Message, "echo 'redeem CODE' > "+m.mnt+"/.kumo") || !strings.Contains(lc.Message, "--btc-xpub") ||
		strings.Contains(lc.Message, "ask the operator") {
		t.Fatalf("last command after topup on the embedded cloud: %+v", lc)
	}
	m.unmount()

	m = c.mount(t, t.TempDir(), nil)
	if err := m.command("topup 1GiB"); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("topup on a server without payments: %v", err)
	}
	if lc := m.report().LastCommand; lc == nil || strings.Count(lc.Message, "operator") != 1 {
		t.Fatalf("last command after topup on a server: %+v", lc)
	}
}
