package fs

import (
	"strings"
	"testing"

	"kumo/internal/control"
)

// TestRedactUnparsedVoucher: a voucher code in a line written to .kumo is
// hidden in the log and the report also when the line does not parse (the
// old redact showed such lines, and the parser's message, verbatim).
func TestRedactUnparsedVoucher(t *testing.T) {
	const code = "QWER-TYUI-OPAS-DFGH-JKLZ-XCVB"
	secret := []string{"TYUI", "OPAS", "DFGH", "JKLZ", "XCVB", "R-TY"}
	for _, line := range []string{
		"redeem " + code,
		"redeem " + code + " extra",
		"redeem " + strings.ReplaceAll(code, "-", " "),
		"REDEEM " + code,
		"redeem: " + code,
		code,
		"  " + code + "\n",
		"redeem " + code + strings.Repeat("X", 120),
	} {
		shown := redact(line)
		msg := "(parsed)"
		if _, err := control.ParseCommand(line); err != nil {
			msg = redactErr(line, err)
		}
		for _, s := range secret {
			if strings.Contains(shown, s) || strings.Contains(msg, s) {
				t.Errorf("line %q: shown %q, error %q: the code shows (%q)", line, shown, msg, s)
			}
		}
	}
	// Commands without secrets stay readable.
	for line, want := range map[string]string{
		"topup 100GiB 3": "topup 100GiB 3",
		" sync ":         "sync",
		"refresh":        "refresh",
		"redeem":         "redeem",
	} {
		if got := redact(line); got != want {
			t.Errorf("redact(%q) = %q, want %q", line, got, want)
		}
	}
}
