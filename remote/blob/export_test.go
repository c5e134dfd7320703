package blob

// KeptOpen reports how many blob files l keeps open.
func KeptOpen(l *Local) int {
	l.fds.mu.Lock()
	defer l.fds.mu.Unlock()
	return len(l.fds.m)
}

// PruneIdle runs the idle prune now.
func PruneIdle(l *Local) { l.fds.pruneIdle() }
