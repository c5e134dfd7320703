package fs

// The disk under the embedded cloud. Its account's quota is the disk's size,
// but the disk also holds everything else on it: df and writes follow the
// room the disk has left (Options.DiskRoom), so a full disk is ENOSPC at the
// write or create that would fill it, never data accepted and then stuck.

import (
	"fmt"
	"sync"
	"syscall"
	"time"
)

// diskRefresh is how long a measure of the disk's room is trusted while
// writes stay well within it.
const diskRefresh = time.Second

// DiskRoomFunc reports how many bytes of new data the disk holding the
// cloud's data can still take. queued is the data written to the drive and
// not uploaded yet.
type DiskRoomFunc func(queued int64) (int64, error)

// DiskRoom measures the disk holding cloudDir: its free space (for
// unprivileged users) minus reserve(disk size) and minus the data queued for
// upload, which still has to be written there once more (wherever it waits,
// the upload writes it into the cloud before its queued copy goes).
func DiskRoom(cloudDir string, reserve func(size int64) int64) DiskRoomFunc {
	return func(queued int64) (int64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(cloudDir, &st); err != nil {
			return 0, fmt.Errorf("free space of %s: %w", cloudDir, err)
		}
		room := int64(st.Bavail)*st.Bsize - reserve(int64(st.Blocks)*st.Bsize) - queued
		return max(room, 0), nil
	}
}

// diskState caches the disk's room between writes.
type diskState struct {
	mu       sync.Mutex
	at       time.Time // when room was measured
	room     int64
	accepted int64 // room taken by what was let through since
}

// diskRoom is the disk's room now (fresh if the last measure is older than
// diskRefresh or force), minus what was let through since; ok is false
// without a disk to follow (a remote cloud).
func (d *Drive) diskRoom(force bool) (room int64, ok bool) {
	if d.o.DiskRoom == nil {
		return 0, false
	}
	s := &d.disk
	s.mu.Lock()
	defer s.mu.Unlock()
	if force || time.Since(s.at) > diskRefresh {
		d.refreshDiskLocked()
	}
	return max(s.room-s.accepted, 0), true
}

func (d *Drive) refreshDiskLocked() {
	s := &d.disk
	r, err := d.o.DiskRoom(d.up.queued.Load())
	if err != nil {
		d.log.Warn("measuring the disk under the embedded cloud", "err", err)
		return // keep the last measure
	}
	s.at, s.room, s.accepted = time.Now(), r, 0
}

// checkDisk refuses with ENOSPC a change adding grow bytes that the disk
// under the embedded cloud cannot take; what it lets through counts against
// the room until the next measure, twice (its queued copy and, once
// uploaded, the cloud's). Near the limit every call measures.
func (d *Drive) checkDisk(grow int64) syscall.Errno {
	if d.o.DiskRoom == nil || grow <= 0 {
		return 0
	}
	grow *= 2
	s := &d.disk
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) > diskRefresh || s.accepted+grow > (s.room-s.accepted)/2 {
		d.refreshDiskLocked()
	}
	if s.accepted+grow > s.room {
		return syscall.ENOSPC
	}
	s.accepted += grow
	return 0
}

// spaceLimit is the size and room df shows: the quota, cut to what the disk
// under the embedded cloud can still take.
func (d *Drive) spaceLimit(limit, used int64) (size, free int64) {
	free = max(limit-used, 0)
	if room, ok := d.diskRoom(true); ok && room < free {
		free = room
		limit = used + room
	}
	return limit, free
}

// nodeDiskCost is what a new node is taken to need on the disk (its
// records in the local tree and in the cloud).
const nodeDiskCost = 4096
