// Package blobtest is a conformance test of blob.Store implementations, shared
// by the local and the S3 store tests.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"

	"kumo/remote/blob"
)

// RandomKey returns a valid key in a random account.
func RandomKey() string {
	a := make([]byte, 16)
	c := make([]byte, 32)
	rand.Read(a)
	rand.Read(c)
	return hex.EncodeToString(a) + "/" + hex.EncodeToString(c)
}

// Run checks the Store contract on s.
func Run(t *testing.T, s blob.Store) {
	ctx := context.Background()
	t.Run("PutGetRange", func(t *testing.T) {
		k := RandomKey()
		data := make([]byte, 100000)
		rand.Read(data)
		if err := s.Put(ctx, k, data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, k, 0, -1)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get all: %v, equal=%v", err, bytes.Equal(got, data))
		}
		got, err = s.Get(ctx, k, 1000, 50)
		if err != nil || !bytes.Equal(got, data[1000:1050]) {
			t.Fatalf("get range: %v", err)
		}
		got, err = s.Get(ctx, k, 99990, 100)
		if err != nil || !bytes.Equal(got, data[99990:]) {
			t.Fatalf("get past end: %v len %d", err, len(got))
		}
		n, err := s.Size(ctx, k)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("size %d %v", n, err)
		}
		// Overwrite is atomic and complete.
		if err := s.Put(ctx, k, data[:10]); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Size(ctx, k); n != 10 {
			t.Fatalf("size after overwrite %d", n)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		k := RandomKey()
		if err := s.Put(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, k, 0, -1)
		if err != nil || len(got) != 0 {
			t.Fatalf("get empty: %v %d", err, len(got))
		}
	})
	t.Run("NotFoundAndDelete", func(t *testing.T) {
		k := RandomKey()
		if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("get missing: %v", err)
		}
		if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("size missing: %v", err)
		}
		if err := s.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("size after delete: %v", err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("delete missing: %v", err)
		}
	})
	t.Run("BadKeys", func(t *testing.T) {
		good := RandomKey()
		for _, k := range []string{"", "/", good + "/x", "../" + good, good[:len(good)-1],
			"ABCDEF/" + good[len(good)-64:], "acct/../" + good[len(good)-64:],
			good[:33] + "/" + good[33:], "00/" + string(bytes.Repeat([]byte("g"), 64)),
			bytes.NewBuffer(bytes.Repeat([]byte("a"), 65)).String() + "/" + good[len(good)-64:]} {
			if err := s.Put(ctx, k, []byte("x")); !errors.Is(err, blob.ErrBadKey) {
				t.Errorf("put %q: %v, want ErrBadKey", k, err)
			}
			if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrBadKey) {
				t.Errorf("get %q: %v, want ErrBadKey", k, err)
			}
			if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrBadKey) {
				t.Errorf("delete %q: %v, want ErrBadKey", k, err)
			}
			if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrBadKey) {
				t.Errorf("size %q: %v, want ErrBadKey", k, err)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		// Readers never see a partial blob while writers replace it.
		k := RandomKey()
		a := bytes.Repeat([]byte("a"), 300000)
		b := bytes.Repeat([]byte("b"), 200000)
		if err := s.Put(ctx, k, a); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for j := 0; j < 20; j++ {
					if (i+j)%2 == 0 {
						d := a
						if j%3 == 0 {
							d = b
						}
						if err := s.Put(ctx, k, d); err != nil {
							t.Error(err)
						}
						continue
					}
					got, err := s.Get(ctx, k, 0, -1)
					if err != nil {
						t.Error(err)
						continue
					}
					if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
						t.Errorf("partial blob of %d bytes", len(got))
					}
				}
			}(i)
		}
		wg.Wait()
	})
}
