// Package browsertest drives Debian's headless chromium over the DevTools
// protocol (github.com/chromedp/chromedp) for the link page's tests: open a
// page, wait for its state, click, and collect downloads into a directory.
// Without chromium the tests skip, except with CI=true where they fail.
package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Browser is one headless chromium, with downloads saved into Dir.
type Browser struct {
	t       testing.TB
	ctx     context.Context // the browser's first tab; new tabs derive from it
	Dir     string
	profile string // chromium's user data directory: names its processes
}

// chromium finds the browser: $KUMO_CHROMIUM, else chromium on PATH.
func chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KUMO_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: the link page's browser tests need it (apt-get install chromium; .ci/run and make test install it)")
	}
	t.Skip("chromium is not installed (apt-get install chromium): skipping the browser test")
	return ""
}

// Start launches headless chromium for the test's duration, saving
// downloads into b.Dir under their download guid.
func Start(t testing.TB) *Browser {
	t.Helper()
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests run as root, where chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.UserDataDir(profile),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &Browser{t: t, ctx: ctx, Dir: t.TempDir(), profile: profile}
	events := true
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: b.Dir, EventsEnabled: &events,
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// Page is one tab.
type Page struct {
	b   *Browser
	t   testing.TB
	ctx context.Context
}

// Open opens url in a new tab, after running each of scripts at the start of
// every document it loads (to hide an API from the page, say).
func (b *Browser) Open(url string, scripts ...string) *Page {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	p := &Page{b: b, t: b.t, ctx: ctx}
	// Attach to the new tab before navigating: the evaluations after the
	// navigation hang otherwise (the tab's runtime events are missed).
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open a tab: %v", err)
	}
	// chromedp enables the Network domain, which copies every response body
	// to the DevTools side: downloads ran at 13 MiB/s with it. The tests
	// watch no requests, so turn it off and measure the browser, not that.
	if _, err := chromedp.Call(ctx, network.Disable, cdp.Empty{}); err != nil {
		b.t.Fatalf("disable network events: %v", err)
	}
	for _, s := range scripts {
		if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: s}); err != nil {
			b.t.Fatalf("add script: %v", err)
		}
	}
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	defer tcancel()
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
	return p
}

// Reload loads the tab's page again, in the same tab (and so, as a rule, the
// same renderer process: the link page's service worker stays beside it).
func (p *Page) Reload() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Reload()); err != nil {
		p.t.Fatalf("reload: %v", err)
	}
}

// Eval evaluates a JavaScript expression (a promise is awaited) and decodes
// its JSON value into out.
func (p *Page) Eval(js string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if err == nil {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
}

// WaitState waits until the page's state (document.body.dataset.state) is
// one of the settled ones (ready, saved, error, password: asking for one)
// and returns it.
func (p *Page) WaitState(timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var s string
		p.Eval(`document.body ? (document.body.dataset.state || '') : ''`, &s)
		if s == "ready" || s == "saved" || s == "error" || s == "password" || time.Now().After(deadline) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Text is the text content of the element sel (a CSS selector).
func (p *Page) Text(sel string) string {
	p.t.Helper()
	var s string
	p.Eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ''`, sel), &s)
	return s
}

// Download clicks sel and waits for the download it starts; it returns the
// saved file's path (named by the download's guid) and the name the page
// suggested.
func (p *Page) Download(sel string, timeout time.Duration) (path, name string) {
	p.t.Helper()
	guid, state, name := p.download(sel, timeout)
	if state != string(browser.DownloadProgressStateCompleted) {
		p.t.Fatalf("download from %s: %s (page says %q)", sel, state, p.Text("#error")+p.Text("#progress"))
	}
	return filepath.Join(p.b.Dir, guid), name
}

// DownloadEnd clicks sel and waits for the download it starts to end: it
// returns "completed", or "canceled" (a download that failed, too).
func (p *Page) DownloadEnd(sel string, timeout time.Duration) string {
	p.t.Helper()
	_, state, _ := p.download(sel, timeout)
	return state
}

func (p *Page) download(sel string, timeout time.Duration) (guid, state, name string) {
	p.t.Helper()
	type result struct{ guid, state string }
	names := make(chan string, 1)
	done := make(chan result, 1)
	lctx, stop := context.WithCancel(p.b.ctx)
	defer stop()
	err := chromedp.ListenBrowser(lctx, func(ev any) {
		switch e := ev.(type) {
		case *browser.EventDownloadWillBegin:
			select {
			case names <- e.SuggestedFilename:
			default:
			}
		case *browser.EventDownloadProgress:
			if e.State == browser.DownloadProgressStateCompleted || e.State == browser.DownloadProgressStateCanceled {
				select {
				case done <- result{e.GUID, string(e.State)}:
				default:
				}
			}
		}
	})
	if err != nil {
		p.t.Fatalf("listen for downloads: %v", err)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		p.t.Fatalf("click %s: %v", sel, err)
	}
	select {
	case r := <-done:
		select {
		case name = <-names:
		default:
		}
		return r.guid, r.state, name
	case <-time.After(timeout):
		p.t.Fatalf("download from %s: not done after %v (page says %q)", sel, timeout, p.Text("#error")+p.Text("#progress"))
	}
	return "", "", ""
}

// CPU is the processor time (user and system) chromium's processes have
// used so far, all of them (browser, network service, renderers, ...): the
// speed test compares it with kumo get's. Processes that ended are not
// counted, so take differences over a span where none ends.
func (b *Browser) CPU() time.Duration {
	var sum time.Duration
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cl), b.profile) { // its children name it too
			sum += ProcCPU(pid)
		}
	}
	return sum
}

// ProcCPU is the processor time (user and system) process pid has used so
// far, from /proc (0 where there is none, or it ended).
func ProcCPU(pid int) time.Duration {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	i := bytes.LastIndexByte(st, ')')
	if err != nil || i < 0 {
		return 0
	}
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ, 100 on Linux
}
