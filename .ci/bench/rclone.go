package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// waitUploads waits until rclone's VFS cache has no upload queued or running
// (its remote control's vfs/stats), or fails after limit.
func (r *rcloneTarget) waitUploads(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		queued, running, err := r.uploads()
		if err != nil {
			return err
		}
		if queued+running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rclone: %d uploads queued and %d running after %v", queued, running, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *rcloneTarget) uploads() (queued, running int, err error) {
	resp, err := http.Post("http://"+r.rc+"/vfs/stats", "application/json", strings.NewReader("{}"))
	if err != nil {
		return 0, 0, fmt.Errorf("rclone vfs/stats: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		DiskCache struct {
			UploadsQueued     int `json:"uploadsQueued"`
			UploadsInProgress int `json:"uploadsInProgress"`
		} `json:"diskCache"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("rclone vfs/stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, 0, fmt.Errorf("rclone vfs/stats: %w", err)
	}
	return v.DiskCache.UploadsQueued, v.DiskCache.UploadsInProgress, nil
}

// freeLoopbackAddr returns a loopback address with a port free at the moment.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
