package payment

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func voucherLedger(txn *badger.Txn, account string, bytes int64, days int) error {
	return addLedger(txn, account, bytes)
}

func TestVoucherRedeemOnce(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	v := NewVouchers(db, voucherLedger)
	codes, err := v.CreateVouchers(50*GiB, 30, 3)
	if err != nil || len(codes) != 3 {
		t.Fatal(codes, err)
	}
	for _, c := range codes {
		if len(c) != 29 || strings.Count(c, "-") != 5 {
			t.Fatalf("code %q not in XXXX-XXXX-... form", c)
		}
	}
	// Typed sloppily: lower case, spaces instead of dashes.
	sloppy := strings.ToLower(strings.ReplaceAll(codes[0], "-", " "))
	b, d, err := v.Redeem("alice", sloppy)
	if err != nil || b != 50*GiB || d != 30 {
		t.Fatalf("Redeem = %d %d %v", b, d, err)
	}
	if _, _, err := v.Redeem("bob", codes[0]); !errors.Is(err, ErrVoucherUsed) {
		t.Fatalf("second redeem: %v", err)
	}
	// A typo is caught by the checksum and changes nothing.
	typo := []byte(codes[1])
	if typo[0] == 'A' {
		typo[0] = 'B'
	} else {
		typo[0] = 'A'
	}
	if _, _, err := v.Redeem("bob", string(typo)); !errors.Is(err, ErrVoucherMalformed) {
		t.Fatalf("typo: %v", err)
	}
	for _, bad := range []string{"", "hello", codes[1] + "A", "!!!!-" + codes[1][5:]} {
		if _, _, err := v.Redeem("bob", bad); !errors.Is(err, ErrVoucherMalformed) {
			t.Fatalf("malformed %q: %v", bad, err)
		}
	}
	// A well-formed code that was never issued.
	other := NewVouchers(openDB(t, t.TempDir()), voucherLedger)
	foreign, _ := other.CreateVouchers(GiB, 1, 1)
	other.db.Close()
	if _, _, err := v.Redeem("bob", foreign[0]); !errors.Is(err, ErrVoucherUnknown) {
		t.Fatalf("unknown: %v", err)
	}
	if n, _ := readLedger(t, db, "bob"); n != 0 {
		t.Fatalf("bob credited %d times by failed redeems", n)
	}
	if n, b := readLedger(t, db, "alice"); n != 1 || b != 50*GiB {
		t.Fatalf("alice ledger %d %d", n, b)
	}
	// The second code still works.
	if _, _, err := v.Redeem("bob", codes[1]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewVouchers(db, nil).Redeem("bob", codes[2]); !errors.Is(err, ErrNoVoucherCredit) {
		t.Fatalf("no credit func: %v", err)
	}
}

func TestVoucherConcurrentRedeem(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	v := NewVouchers(db, voucherLedger)
	for round := 0; round < 3; round++ {
		codes, err := v.CreateVouchers(GiB, 7, 1)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, used := 0, 0
		start := make(chan struct{})
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, err := v.Redeem("carol", codes[0])
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrVoucherUsed):
					used++
				default:
					t.Errorf("redeem: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins != 1 || used != 19 {
			t.Fatalf("round %d: %d wins, %d used; want 1 and 19", round, wins, used)
		}
	}
	if n, b := readLedger(t, db, "carol"); n != 3 || b != 3*GiB {
		t.Fatalf("ledger %d %d, want 3 credits", n, b)
	}
}

func TestVoucherCreateValidates(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	v := NewVouchers(db, voucherLedger)
	for _, c := range [][3]int64{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}} {
		if _, err := v.CreateVouchers(c[0], int(c[1]), int(c[2])); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%v: %v", c, err)
		}
	}
}
