package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/internal/control"
	"kumo/internal/metrics"
)

const testEmail = "t@example.com"

// report reads and decodes MNT/.kumo.json.
func (m *mounted) report() control.Status {
	m.t.Helper()
	b, err := os.ReadFile(m.p(control.FileJSON))
	if err != nil {
		m.t.Fatalf("read %s: %v", control.FileJSON, err)
	}
	var s control.Status
	if err := json.Unmarshal(b, &s); err != nil {
		m.t.Fatalf("%s: %v\n%s", control.FileJSON, err, b)
	}
	return s
}

// command writes one line to MNT/.kumo the way `echo LINE > MNT/.kumo` does.
func (m *mounted) command(line string) error {
	f, err := os.OpenFile(m.p(control.FileText), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// statfsSize is the size df shows for the mount.
func (m *mounted) statfsSize() (size, used int64) {
	m.t.Helper()
	var st syscall.Statfs_t
	must(m.t, syscall.Statfs(m.mnt, &st))
	return int64(st.Blocks) * st.Bsize, int64(st.Blocks-st.Bfree) * st.Bsize
}

func TestControlFiles(t *testing.T) {
	const quota = 256 << 20
	c := startCloud(t, t.TempDir(), quota)
	m := c.mount(t, t.TempDir(), nil)
	must(t, os.WriteFile(m.p("f"), []byte("hello"), 0o644))
	must(t, os.Mkdir(m.p("dir"), 0o755))
	must(t, os.WriteFile(m.p("dir/g"), []byte("world"), 0o644))

	// The reports.
	text, err := os.ReadFile(m.p(".kumo"))
	must(t, err)
	for _, want := range []string{testEmail, c.url, "quota", "connection  online", "uploads", "cache"} {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf(".kumo lacks %q:\n%s", want, text)
		}
	}
	s := m.report()
	if s.Schema != control.SchemaVersion || s.Account != testEmail || s.Server != c.url || s.Quota.Limit != quota ||
		s.Quota.Full || s.Connection.State != "online" || s.Cache.Budget <= 0 || len(s.Invoices) != 0 {
		t.Errorf(".kumo.json: %+v", s)
	}
	var st syscall.Stat_t
	must(t, syscall.Stat(m.p(".kumo"), &st))
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Uid != uint32(os.Getuid()) || st.Ino < ctlInoBase {
		t.Errorf("stat .kumo: mode %o uid %d ino %d", st.Mode, st.Uid, st.Ino)
	}
	if _, err := os.Stat(m.p(control.FileQR)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("QR code with no invoice: %v", err)
	}

	// Never listed, so ls -a, find and rsync -a do not see or copy them.
	if names := readDirNames(t, m.mnt); !equal(names, []string{"dir", "f"}) {
		t.Errorf("readdir: %q", names)
	}
	for _, cmd := range [][]string{{"ls", "-a", m.mnt}, {"find", m.mnt}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		if bytes.Contains(out, []byte(".kumo")) || !bytes.Contains(out, []byte("f")) {
			t.Errorf("%s shows the control files:\n%s", cmd[0], out)
		}
	}
	dst := t.TempDir()
	if out, err := exec.Command("rsync", "-a", m.mnt+"/", dst+"/").CombinedOutput(); err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	if names := readDirNames(t, dst); !equal(names, []string{"dir", "f"}) {
		t.Errorf("rsync -a copied %q", names)
	}

	// Their names are refused as targets.
	for _, err := range []error{
		os.WriteFile(m.p(control.FileQR), nil, 0o644),
		os.Rename(m.p("f"), m.p(".kumo")),
		os.Rename(m.p("f"), m.p(".kumo.json")),
		os.Rename(m.p(".kumo"), m.p("x")),
		os.Remove(m.p(".kumo")),
		os.Remove(m.p(".kumo.json")),
		os.Link(m.p("f"), m.p(control.FileQR)),
		os.Chmod(m.p(".kumo"), 0o666),
		os.Chtimes(m.p(".kumo.json"), time.Now(), time.Now()),
		os.Truncate(m.p(".kumo.json"), 0),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("want EPERM, got %v", err)
		}
	}
	if err := os.WriteFile(m.p(".kumo.json"), []byte("sync\n"), 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("write .kumo.json: %v, want EACCES", err)
	}
	checkFile(t, m.p("f"), []byte("hello"))

	// Commands: a bad one fails with EINVAL and the reason shows next.
	if err := m.command("frobnicate 3"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad command: %v, want EINVAL", err)
	}
	// A line that is no command may be a pasted voucher code: shown redacted.
	if lc := m.report().LastCommand; lc == nil || lc.OK || lc.Command != "frob********" || !strings.Contains(lc.Message, "unknown command") {
		t.Errorf("last command after a bad one: %+v", lc)
	}
	if err := m.command("topup lots"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("topup with a bad size: %v", err)
	}
	// As a shell does it (O_TRUNC, then a write with the newline).
	if out, err := exec.Command("sh", "-c", "echo sync > "+m.p(".kumo")).CombinedOutput(); err != nil {
		t.Fatalf("echo sync > .kumo: %v %s", err, out)
	}
	if lc := m.report().LastCommand; lc == nil || !lc.OK || lc.Command != "sync" {
		t.Errorf("last command after sync: %+v", lc)
	}
	// O_APPEND and a last line without a newline work too.
	f, err := os.OpenFile(m.p(".kumo"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("refresh")
	must(t, err)
	must(t, f.Close())
	if lc := m.report().LastCommand; lc == nil || !lc.OK || lc.Command != "refresh" {
		t.Errorf("last command after refresh: %+v", lc)
	}
	if err := m.command("topup 1GiB"); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("topup on a server without payments: %v, want ENOTSUP", err)
	}
	if lc := m.report().LastCommand; lc == nil || lc.OK || !strings.Contains(lc.Message, "payments_disabled") {
		t.Errorf("last command after topup: %+v", lc)
	}

	// Vouchers: redeem once grows the quota in statfs; again, or a bad code, EINVAL.
	codes, err := c.srv.CreateVouchers(1<<30, 30, 1)
	must(t, err)
	if size, _ := m.statfsSize(); size != quota {
		t.Fatalf("statfs size %d, want %d", size, quota)
	}
	must(t, m.command("redeem "+codes[0]))
	if size, _ := m.statfsSize(); size != quota+1<<30 {
		t.Errorf("statfs size after redeem %d, want %d", size, quota+1<<30)
	}
	s = m.report()
	if s.Quota.Limit != quota+1<<30 || s.LastCommand == nil || !s.LastCommand.OK || strings.Contains(s.LastCommand.Command, codes[0]) {
		t.Errorf("after redeem: quota %d, last command %+v (the code must not show)", s.Quota.Limit, s.LastCommand)
	}
	if err := m.command("redeem " + codes[0]); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("second redeem: %v, want EINVAL", err)
	}
	if lc := m.report().LastCommand; lc == nil || lc.OK || !strings.Contains(lc.Message, "used_voucher") {
		t.Errorf("last command after a used voucher: %+v", lc)
	}
	if err := m.command("redeem KUMO-NOPE-NOPE"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad voucher: %v, want EINVAL", err)
	}
	if size, _ := m.statfsSize(); size != quota+1<<30 {
		t.Errorf("statfs size after refused redeems %d", size)
	}

	// Metrics of the mount.
	reg := metrics.New()
	m.d.RegisterMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg.Handler(), testLogger(t))
	must(t, err)
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for name, want := range map[string]float64{
		"kumo_drive_quota_limit_bytes": quota + 1<<30,
		"kumo_drive_online":            1,
		"kumo_drive_quota_full":        0,
		"kumo_drive_upload_queue_ops":  -1, // present
		"kumo_drive_cache_hits_total":  -1,
	} {
		v, ok := metricValue(body, name)
		if !ok || want >= 0 && v != want {
			t.Errorf("metric %s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, _ := metricValue(body, "kumo_drive_quota_used_bytes"); v <= 0 {
		t.Errorf("kumo_drive_quota_used_bytes = %v", v)
	}
}

func metricValue(body []byte, name string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`)
	mm := re.FindSubmatch(body)
	if mm == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(mm[1]), 64)
	return v, err == nil
}

// TestQuotaFullResumes: the cloud refuses an upload for quota; the data stays
// queued and readable, the report says so, and a voucher redeemed through
// .kumo resumes the queue without a remount.
func TestQuotaFullResumes(t *testing.T) {
	c := startCloud(t, t.TempDir(), 64<<20)
	// A long quiet time: nothing uploads before the file is closed.
	m := c.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour })
	data := randBytes(3<<20 + 12345)
	f, err := os.Create(m.p("big"))
	must(t, err)
	_, err = f.Write(data)
	must(t, err)
	// The operator shrinks the quota below what is queued; the close starts the upload.
	must(t, c.srv.SetQuota(testEmail, 1<<20))
	must(t, f.Close())

	waitFor(t, 15*time.Second, func() bool { return m.report().Quota.Full })
	text, err := os.ReadFile(m.p(".kumo"))
	must(t, err)
	if !bytes.Contains(text, []byte("quota full: top up to continue")) {
		t.Errorf(".kumo does not say the quota is full:\n%s", text)
	}
	s := m.report()
	if s.Uploads.Files != 1 || s.Uploads.Bytes < int64(len(data)) {
		t.Errorf("queue while blocked: %+v", s.Uploads)
	}
	checkFile(t, m.p("big"), data)
	// statfs cannot show more used than the size: the disk is full.
	if size, used := m.statfsSize(); size != 1<<20 || used != size {
		t.Errorf("statfs while blocked: size %d used %d", size, used)
	}
	if err := os.WriteFile(m.p("more"), randBytes(1<<20), 0o644); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("write while over quota: %v, want EDQUOT", err)
	}
	if m.d.Status().Queue.Files != 1 {
		t.Fatalf("data was dropped: %+v", m.d.Status().Queue)
	}

	codes, err := c.srv.CreateVouchers(64<<20, 30, 1)
	must(t, err)
	start := time.Now()
	must(t, m.command("redeem "+codes[0]))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, m.d.Flush(ctx))
	t.Logf("queue drained %v after the redeem", time.Since(start).Round(time.Millisecond))
	if s := m.report(); s.Quota.Full || s.Uploads.Files != 0 || s.Quota.Limit != 65<<20 {
		t.Errorf("after redeem: %+v", s)
	}
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil)
	checkFile(t, m2.p("big"), data)
}
