package fs

import (
	"syscall"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/client"
)

// TestCoreOnlineAgainPullsAtOnce: while the cloud is unreachable the puller
// backs off (1, 2, 4, 8 s... up to 30 s); once the cloud answers again (here
// a push goes through), what another device changed meanwhile shows at
// once, not after the rest of that backoff.
func TestCoreOnlineAgainPullsAtOnce(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	b := coreDrive(t, c)
	a := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
	}, nil)
	px.down.Store(true)
	waitFor(t, 5*time.Second, func() bool { return !a.Status().Online })
	// Failures at about 0, 1, 3 and 7 s: the puller then sleeps till ~15 s.
	time.Sleep(8 * time.Second)
	coreFile(t, a, api.RootID, "from-a", "a")
	coreFile(t, b, api.RootID, "from-b", "b")
	coreFlush(t, b)
	if _, e := a.lookupForTest(api.RootID, "from-b"); e != syscall.ENOENT {
		t.Fatalf("a finds from-b while cut off: %v", e)
	}

	px.down.Store(false)
	coreFlush(t, a) // a's push reaches the cloud: online again
	up := time.Now()
	waitFor(t, 4*time.Second, func() bool {
		_, e := a.lookupForTest(api.RootID, "from-b")
		return e == 0
	})
	if got := coreRead(t, a, api.RootID, "from-b"); got != "b" {
		t.Fatalf("a reads from-b = %q", got)
	}
	t.Logf("b's file showed on a %v after a's push went through", time.Since(up).Round(10*time.Millisecond))
}
