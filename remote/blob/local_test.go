package blob_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kumo/remote/blob"
	"kumo/remote/blob/blobtest"
)

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Run(t, s)

	// No temp files are left behind and every blob sits inside its account dir.
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(info.Name(), ".tmp-") {
			t.Errorf("leftover temp file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLocalLayout(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := blobtest.RandomKey()
	if err := s.Put(context.Background(), k, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	acct, chunk, _ := strings.Cut(k, "/")
	b, err := os.ReadFile(filepath.Join(dir, acct, chunk[:2], chunk))
	if err != nil || string(b) != "hello" {
		t.Fatalf("layout: %q %v", b, err)
	}
}

func FuzzValidKey(f *testing.F) {
	f.Add(blobtest.RandomKey())
	f.Add("../x")
	f.Fuzz(func(t *testing.T, k string) {
		if blob.ValidKey(k) && (strings.Contains(k, "..") || strings.Count(k, "/") != 1 || strings.ContainsAny(k, "\\\x00")) {
			t.Fatalf("accepted %q", k)
		}
	})
}
