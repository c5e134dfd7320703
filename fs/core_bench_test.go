package fs

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// BenchmarkCoreUntar is the drive's own work for one file of an untar, as
// the kernel asks for it (create, two writes, chown and chmod while open,
// close, release, then the times set by path), without FUSE: what the
// daemon costs per file, apart from the kernel round trips. Uploads wait
// (a long quiet time), as they do during a burst of closes. 100 files a
// directory.
func BenchmarkCoreUntar(b *testing.B) {
	c := startCloud(b, b.TempDir(), 0)
	d := coreDriveAt(b, c, b.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	data := make([]byte, 5000)
	ctx := context.Background()
	var dir uint64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%100 == 0 {
			st, e := d.create(api.RootID, newNode{name: fmt.Sprintf("d%d", i/100), mode: syscall.S_IFDIR | 0o755})
			if e != 0 {
				b.Fatalf("mkdir: %v", e)
			}
			dir = st.id
		}
		st, e := d.create(dir, newNode{name: fmt.Sprintf("f%d.go", i), mode: syscall.S_IFREG | 0o644})
		if e != 0 {
			b.Fatalf("create: %v", e)
		}
		h := d.open(st, syscall.O_WRONLY)
		for off := 0; off < 2; off++ {
			if _, e := d.write(ctx, st, data, int64(off*len(data))); e != 0 {
				b.Fatalf("write: %v", e)
			}
		}
		for _, mode := range []uint32{0o644, 0o644} {
			if e := d.setAttrs(st, func(a *meta.Attrs) syscall.Errno { a.Mode = a.Mode&^0o7777 | mode; return 0 }); e != 0 {
				b.Fatalf("setattr: %v", e)
			}
		}
		if e := d.makeDurable(st, true, false); e != 0 {
			b.Fatalf("close: %v", e)
		}
		if e := d.release(h); e != 0 {
			b.Fatalf("release: %v", e)
		}
		if e := d.setAttrs(st, func(a *meta.Attrs) syscall.Errno { a.Mtime = 1; return 0 }); e != 0 {
			b.Fatalf("utimes: %v", e)
		}
	}
}

// BenchmarkCoreUnlink is the drive's own work for one file of an rm -rf
// (the unlink, after the kernel's lookup), without FUSE, pushes held: the
// files were made (and their creates queued) before the timer starts, 100
// a directory.
func BenchmarkCoreUnlink(b *testing.B) { benchUnlink(b, false) }

// BenchmarkCoreListUnlink is BenchmarkCoreUnlink as rm -rf does it: each
// directory is listed (readdir) before its files are unlinked, so their
// entries can come from the listing the store remembers.
func BenchmarkCoreListUnlink(b *testing.B) { benchUnlink(b, true) }

func benchUnlink(b *testing.B, listFirst bool) {
	c := startCloud(b, b.TempDir(), 0)
	d := coreDriveAt(b, c, b.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	var dirs []uint64
	for i := range b.N {
		if i%100 == 0 {
			st, e := d.create(api.RootID, newNode{name: fmt.Sprintf("d%d", i/100), mode: syscall.S_IFDIR | 0o755})
			if e != 0 {
				b.Fatalf("mkdir: %v", e)
			}
			dirs = append(dirs, st.id)
		}
		if _, e := d.create(dirs[len(dirs)-1], newNode{name: fmt.Sprintf("f%d.go", i), mode: syscall.S_IFREG | 0o644}); e != 0 {
			b.Fatalf("create: %v", e)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if listFirst && i%100 == 0 {
			if _, _, e := d.list(dirs[i/100]); e != 0 {
				b.Fatalf("list: %v", e)
			}
		}
		if e := d.unlink(dirs[i/100], fmt.Sprintf("f%d.go", i), false); e != 0 {
			b.Fatalf("unlink: %v", e)
		}
	}
}
