// Package rofs holds the write half of a read-only go-fuse node: every
// operation that would change something fails with EROFS. Embed ReadOnly
// beside gofs.Inode in the nodes of a read-only view (the drive's history
// snapshots, a mounted link).
package rofs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// ReadOnly answers every changing operation with EROFS (copy_file_range
// out of such a node: ENOTSUP, see CopyFileRange).
type ReadOnly struct{}

var (
	_ gofs.NodeSetattrer      = ReadOnly{}
	_ gofs.NodeCreater        = ReadOnly{}
	_ gofs.NodeMkdirer        = ReadOnly{}
	_ gofs.NodeMknoder        = ReadOnly{}
	_ gofs.NodeSymlinker      = ReadOnly{}
	_ gofs.NodeLinker         = ReadOnly{}
	_ gofs.NodeUnlinker       = ReadOnly{}
	_ gofs.NodeRmdirer        = ReadOnly{}
	_ gofs.NodeRenamer        = ReadOnly{}
	_ gofs.NodeSetxattrer     = ReadOnly{}
	_ gofs.NodeRemovexattrer  = ReadOnly{}
	_ gofs.NodeAllocater      = ReadOnly{}
	_ gofs.NodeCopyFileRanger = ReadOnly{}
)

func (ReadOnly) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (ReadOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (ReadOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (ReadOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (ReadOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (ReadOnly) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (ReadOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (ReadOnly) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (ReadOnly) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (ReadOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }
func (ReadOnly) Removexattr(context.Context, string) syscall.Errno              { return syscall.EROFS }
func (ReadOnly) Allocate(context.Context, gofs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}

// CopyFileRange is asked of the source of a copy (cp out of a history
// snapshot into the live tree): being read-only says nothing about the
// destination, so not EROFS but "not supported", on which the kernel
// copies by reading and writing (cp would give up on EROFS).
func (ReadOnly) CopyFileRange(context.Context, gofs.FileHandle, uint64, *gofs.Inode, gofs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}
