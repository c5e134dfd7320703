package size

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1", 1}, {"1B", 1}, {"512b", 512},
		{"10GiB", 10 << 30}, {"10gib", 10 << 30}, {"10 GiB", 10 << 30},
		{"500MB", 500_000_000}, {"1T", 1 << 40}, {"1TB", 1_000_000_000_000},
		{"1.5GiB", 3 << 29}, {"4K", 4096}, {"2kb", 2000}, {"1PiB", 1 << 50},
		{"0.5B", 0}, {" 7 M ", 7 << 20}, {"8191P", 8191 << 50},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "1..5G", ".", "10 XB", "1e3", "1GiBB", "8192P", "99999999999999999999"} {
		if n, err := Parse(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %d, %v; want ErrSyntax", bad, n, err)
		}
	}
}

func TestFormat(t *testing.T) {
	cases := map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 10 << 30: "10 GiB", -2048: "-2 KiB"}
	for n, want := range cases {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10GiB", "500MB", "1T", "1.5 k", "", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil && n < 0 {
			t.Fatalf("Parse(%q) = %d < 0", s, n)
		}
		if err == nil {
			// Format keeps one decimal: parsing it back lands within 5% of n
			// (or overflows, for sizes near the int64 limit).
			back, err := Parse(Format(n))
			if err == nil && (float64(back) < float64(n)*0.95 || float64(back) > float64(n)*1.05) {
				t.Fatalf("Parse(Format(%d)=%q) = %d", n, Format(n), back)
			}
		}
	})
}
