package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"image/png"
	"strings"
	"testing"
	"time"
)

func TestParseCommand(t *testing.T) {
	good := []struct {
		in   string
		want Command
	}{
		{"topup 1GiB", Command{Kind: CmdTopup, Bytes: 1 << 30, Months: 1}},
		{"topup 100GiB 3\n", Command{Kind: CmdTopup, Bytes: 100 << 30, Months: 3}},
		{"redeem ABCD-EFGH", Command{Kind: CmdRedeem, Code: "ABCD-EFGH"}},
		{"  sync ", Command{Kind: CmdSync}},
		{"refresh", Command{Kind: CmdRefresh}},
		{"share accept alice@example.com/My Docs", Command{Kind: CmdShareAccept, Share: "alice@example.com/My Docs"}},
	}
	for _, c := range good {
		got, err := ParseCommand(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "topup", "topup -1GiB", "topup 1GiB 0", "topup 1GiB 99", "topup lots",
		"redeem", "redeem a b", "sync now", "rm -rf /", "topup 1GiB 2 3", "share", "share accept", "share rm x"} {
		if _, err := ParseCommand(in); !errors.Is(err, ErrCommand) {
			t.Errorf("ParseCommand(%q) accepted or wrong error: %v", in, err)
		}
	}
}

func sample() Status {
	return Status{
		Account: "a@example.com", Server: "embedded",
		Quota:      Quota{Used: 3 << 30, Limit: 10 << 30},
		Cache:      Cache{Bytes: 1 << 20, Budget: 4 << 30, Hits: 3, Misses: 1, HitRate: 0.75},
		Uploads:    Uploads{Files: 2, Bytes: 5 << 20, LastError: "quota full"},
		Connection: Connection{State: "online"},
		Invoices: []Invoice{{ID: "inv1", Bytes: 1 << 30, Months: 1, AmountBTC: "0.00010000",
			Address: "bcrt1qxyz", URI: "bitcoin:bcrt1qxyz?amount=0.0001", State: "New", Required: 1,
			Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
}

func TestText(t *testing.T) {
	out := string(Text(sample()))
	for _, want := range []string{"a@example.com", "[######..............]", "3 GiB of 10 GiB (30%)", "75%",
		"bitcoin:bcrt1qxyz?amount=0.0001", "New", "0/1 confirmations", "last error: quota full"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestJSONSchema(t *testing.T) {
	var back map[string]any
	if err := json.Unmarshal(JSON(sample()), &back); err != nil {
		t.Fatal(err)
	}
	if back["schema"] != float64(SchemaVersion) {
		t.Errorf("schema = %v", back["schema"])
	}
	for _, k := range []string{"account", "server", "quota", "cache", "uploads", "connection", "invoices"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	empty := string(JSON(Status{}))
	if !strings.Contains(empty, `"invoices": []`) {
		t.Errorf("empty invoices must be [] not null: %s", empty)
	}
}

func TestQR(t *testing.T) {
	b, err := QRPNG("bitcoin:bcrt1qxyz?amount=0.0001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	s, err := QRTerminal("bitcoin:x")
	if err != nil || len(s) < 100 {
		t.Fatalf("terminal QR: %v %d", err, len(s))
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"topup 1GiB 3", "redeem X", "sync", "refresh", "topup 9999999TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommand(s)
		if err == nil && c.Kind == CmdTopup && (c.Bytes <= 0 || c.Months < 1 || c.Months > MaxTopupMonths) {
			t.Fatalf("accepted bad topup %+v", c)
		}
	})
}

// TestJSONUnsetTimesNull: a time that is not set (no plan, nothing queued,
// online) is null in .kumo.json, not 0001-01-01T00:00:00Z; a set one keeps
// its RFC 3339 form, and an older report with zero times still decodes.
func TestJSONUnsetTimesNull(t *testing.T) {
	js := string(JSON(sample()))
	if strings.Contains(js, "0001-01-01") {
		t.Fatalf("unset times written as year 1:\n%s", js)
	}
	for _, k := range []string{`"plan_expires": null`, `"oldest": null`, `"offline_since": null`} {
		if !strings.Contains(js, k) {
			t.Errorf("JSON lacks %s:\n%s", k, js)
		}
	}
	s := sample()
	s.Quota.PlanExpires = At(time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC))
	if js := string(JSON(s)); !strings.Contains(js, `"plan_expires": "2031-02-03T04:05:06Z"`) {
		t.Errorf("a set time:\n%s", js)
	}
	var old Status
	if err := json.Unmarshal([]byte(`{"quota":{"plan_expires":"0001-01-01T00:00:00Z"},"uploads":{"oldest":"0001-01-01T00:00:00Z"}}`), &old); err != nil {
		t.Fatalf("older report: %v", err)
	}
}

// The report lists the links apart from the last command: the one being
// made with its progress, the URLs, and failures.
func TestTextLinks(t *testing.T) {
	s := sample()
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s.Links = []Link{
		{Path: "/now", Running: true, Message: "making the link: 3 of 9 chunks read", At: at},
		{Path: "/a", URL: "https://x/s/1#k", Message: "(2 special files left out)", At: at},
		{Path: "/b", Error: "no such file", At: at},
	}
	s.LastCommand = &CommandResult{Command: "sync", OK: true, Message: "sync started", At: at}
	out := string(Text(s))
	for _, want := range []string{"/now  RUNNING: making the link: 3 of 9 chunks read", "/a  https://x/s/1#k (2 special files left out)",
		"/b  FAILED: no such file", `last command  "sync" ok`} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var back Status
	if err := json.Unmarshal(JSON(s), &back); err != nil || len(back.Links) != 3 || back.Links[1].URL != "https://x/s/1#k" {
		t.Fatalf("links through JSON: %+v, %v", back.Links, err)
	}
}
