// Package fs is the kumo drive: go-fuse nodes over a local-first copy of the
// account's tree, with write-back of data and tree changes to the cloud.
//
// # Layers
//
//   - The local tree (cache.Store: sealed nodes and entries, exactly the wire
//     shapes) is authoritative for this mount. Every tree operation (create,
//     mkdir, symlink, mknod, link, unlink, rmdir, rename incl. NOREPLACE and
//     EXCHANGE, chmod/chown/utimens, xattrs) is one cache.Apply that changes the
//     local tree and appends the equivalent api.BatchOp to the push journal,
//     then returns. Node ids are random 63-bit numbers chosen here; inode
//     numbers are node ids.
//   - Decrypted attributes live in memory per node (nodeState, opened with
//     meta.Sealer); everything on disk is sealed. The local copy of a node
//     differs from what the cloud gets in two ways: its size is the logical size
//     (including data not uploaded yet), an internal attribute "kumo:trunc"
//     records a truncation watermark (base bytes at or beyond it read as zeros),
//     and "kumo:prealloc" what fallocate preallocated (counted in st_blocks;
//     fallocate.go).
//     The cloud always gets attributes consistent with the chunk list.
//
// # Data
//
// A file's content is its base chunk list (attrs.Chunks: 4 MiB chunks, zero id
// = hole) overlaid by write-back layers: encrypted segment files (64 KiB
// segments) per (node, generation). Per segment, the newest layer holding it
// wins, else the base (below the watermark), else zeros. Segment files are
// write-behind (cache.SegmentFile): a writer goroutine per file seals and
// writes segments in order, reads see what waits, Sync waits for it.
// Partial-segment writes patch the segment the top layer holds (in memory
// while it waits); only a segment from an older layer or the base is
// read-modify-written. A file is dirty iff it has a layer
// (truncate creates an empty one so a pure truncate is uploaded too).
//
// close (flush) writes the layers' waiting segments to their files and saves
// the local attributes (one Apply: a redo-log record), without a device
// flush: after that, kill -9 of the daemon loses nothing (the kernel has
// it), as on ext4. fsync (and close with Options.DurableClose, kumo mount
// --durable-close) also fdatasyncs the layers and syncs the store: after
// that, a power loss loses nothing either. So does the close after a
// truncate that cut data the disk held (nodeState.syncOnClose: ext4's
// auto_da_alloc), so a file rewritten with O_TRUNC comes back old or new. A close's record is marked
// cache.Mutation.AfterData: the store syncs the segment data before the
// redo log or badger can hold the record (Store.DataOrder keeps a log sync
// from slipping between the data and its record), so a power loss never
// keeps a new size without its bytes; the store also commits everything
// every 5 s (Store.SyncAll). A truncate that cuts unuploaded segment data
// saves and syncs the new size first, and a segment file is removed only
// once the records that make it unneeded are synced. sync(2) and syncfs(2)
// do not reach the daemon: Linux sends FUSE_SYNCFS only to virtiofs (checked
// on 6.18; go-fuse has no handler for it either). At the next mount, segment
// files are found (Store.SegmentFiles) and uploaded; layer data beyond the
// saved size (never fsync'd) is cut so it cannot reappear.
//
// The uploader takes a dirty file after 1 s without writes (at once after
// close or Flush): it freezes the current layers (new writes go to a new
// generation), rebuilds only the touched chunks (base bytes + layers; all-zero
// chunks become holes; untouched chunks keep their ids), names them with
// chunk.Cipher.ID, skips those the cloud has (HaveChunks), seals and uploads
// up to 4 in parallel, keeps the sealed segments in the chunk cache (a remote
// cloud only), and then,
// in one Apply, sets the new base and appends an update op. The frozen segment
// files are removed right after that Apply is synced: the data is then in
// acknowledged chunks plus a durable journal op (waiting for the pusher's ack
// instead would let a truncate stall forever while offline). Truncate waits
// for a running upload of the same file.
//
// # Push
//
// The pusher sends the journal in order with client.Batch (up to 300 ops and
// 3 MiB of JSON, under the cloud's 4 MiB; a 413 halves the batch and the
// bound, down to one op), acks what is done, retries with backoff while the cloud is unreachable,
// refuses quota or read-only (the data stays queued, Status says so). While
// local changes keep coming it waits for them to pause for 250 ms (or for
// 65,536 queued ops; Flush does not wait): each batch is a cloud commit that
// would compete with the writer's own closes. Like the uploads, it also
// waits while the kernel keeps sending requests, at most 10 s after the last
// change (foregroundBusy). An update carries the node's
// whole state, so an update superseded by a later one in the batch is left
// out and one that follows the node's create in the batch is folded into it;
// the expected version of the update sent is filled in at push time from the
// version the cloud last reported. An update of a node deleted here since it
// was queued is dropped (its unlink follows). Refusals are resolved, logged,
// never by dropping data:
//   - create, name taken by another client: ours is created under
//     "NAME (conflict YYYY-MM-DD HHMMSS).EXT", theirs shown under the name;
//     later queued ops naming our entry are rewritten to follow it;
//   - create, parent gone: ours goes to the root under a conflict name;
//   - create, "node id in use": done if the node the cloud shows opens as
//     ours (an earlier try went through, its answer lost: its entry is
//     taken, or renamed to our name); else a conflict copy takes a new id
//     and a queued create is refused for good (below);
//   - update, stale version: if only we changed the data (the cloud's chunk
//     list is what we last pushed), retried on the new version; otherwise ours
//     becomes a new node under a conflict name and the local node adopts theirs;
//   - unlink or rename of an entry already gone, or unlink of a name that holds
//     another node now (another client replaced the file: 409 conflict, and
//     a lookup of the name finds that other node, authenticated: the server's
//     409 alone proves nothing): an ordinary race, not reported; the op is
//     dropped (info log) and the directory relisted, so the other client's
//     file shows;
//   - refused for good (one op still 413, attributes over the cloud's limit,
//     the node cap, a malformed op, a conflict copy's create refused with
//     anything but a transient error): the op leaves the queue so the ones behind
//     it go on, a create or update stays on this machine only, and it is
//     listed in .kumo / .kumo.json (uploads.refused_ops) and logged;
//   - other refusals: the affected directories are relisted from the cloud;
//   - an op that fails 10 times in a row while the cloud answers is logged
//     (error, once) and shown in .kumo's last error as stuck; it is retried.
//
// # Pull
//
// The puller long-polls the change feed from the local cursor. Entries and
// nodes with queued local ops are left alone; others are refetched (Lookup,
// GetNode), applied locally, and the kernel is told (NotifyEntry,
// NotifyDelete, NotifyContent). A new entry for a file the drive has counts
// as one more link until GetNode brings the cloud's count, so removing either
// entry never drops the file (or its data not uploaded yet). A batch's
// removal of a node's entry and creation of its other entry (a rename or a
// move, maybe over another name, or with a new node at the old name), or
// its pointing of two entries each at the other's node (an exchange), is
// applied as one local mutation
// (moveEntry, exchangeLocked), so a lookup never finds a node nameless. A feed reset
// waits for the journal to drain, then relists. A new cache lists the whole tree once; a remount starts from
// the cached tree and cursor without listing.
//
// # Read
//
// Kernel page cache (FOPEN_KEEP_CACHE, invalidated by notify) → layers →
// chunk cache (sealed segments; only from a remote cloud) → cloud: random
// reads fetch single segments with a Range request and hand the rest of the
// decrypted segment to the page cache (pagecache.go); sequential readers
// (per handle) fetch whole chunks and
// read ahead the next 3 in parallel; a small file read from the cloud fetches
// the other small files of its directory (dirahead.go); concurrent fetches of
// the same data are merged. Any authentication failure is EIO plus an error log naming the node
// and chunk. Uncached reads give up with EIO after 10 s when the cloud is
// unreachable.
//
// # Kernel interface
//
// Entry, negative-entry and attribute timeouts are an hour (kernelCacheTTL):
// the puller notifies the kernel of every change made elsewhere, and the
// kernel updates its own caches for changes made through it. The kernel also
// keeps file pages (explicit data cache control: only NotifyContent drops
// them) and directory listings (FOPEN_CACHE_DIR; listings include "." and
// "..", so a cached listing is never empty, which the kernel could not drop).
// Every notification of a changed entry also drops the parent's listing. File locks (flock, POSIX) are kept by
// the kernel for this mount.
//
// # Control files (control.go)
//
// The root names ".kumo", ".kumo.json" and ".kumo-topup.png" are virtual
// files: Lookup resolves them (inode numbers with the top bit set, which no
// node id has), Readdir never lists them (so ls -a, find, rsync and backups
// never see them), nothing about them reaches the local tree, the journal or
// the cloud, and a cloud entry of the same name is hidden. Create, rename,
// unlink, link and setattr onto them are EPERM; the one exception is the size
// 0 setattr that `echo CMD > .kumo` brings, a no-op. They belong to the
// mount's owner (0600/0400; others get EACCES) and open with FOPEN_DIRECT_IO:
// the content is built at open (getattr reports the current length):
//   - .kumo: control.Text of ControlStatus: Drive.Status plus the account's
//     invoices (client.Invoices, cached 1 s, dropped on every account
//     refresh; the fetch also notices an unreachable cloud at once) and the
//     last command's outcome;
//   - .kumo.json: the same as control.JSON (schema v1);
//   - .kumo-topup.png: the QR code of the newest New/Processing invoice's
//     BIP21 URI; ENOENT (also at lookup) when there is none.
//
// Each complete line written to .kumo (a last line without newline runs at
// close) is a command (control.ParseCommand): topup SIZE [MONTHS] →
// client.Topup; redeem CODE → client.Redeem (the account it returns is
// applied at once); sync → every dirty file urgent, uploader and pusher
// kicked, a quota pause lifted (returns at once); refresh → the account and
// invoices refetched and the puller woken (while online the long-poll
// already brings changes as they happen). Errors of the write: EINVAL for a
// line that does not parse, a topup the server finds invalid, an unknown or
// used voucher; ENOTSUP for topup on a server without Bitcoin payments (it
// sells nothing: the operation is not supported there); EAGAIN for too many
// unpaid invoices; EIO when the cloud cannot be reached. Blank lines are
// ignored; voucher codes are shown and logged redacted.
//
// # Quota (quota.go)
//
// statfs: size = the account's quota, used = stored + queued bytes; on the
// embedded cloud size and room are cut to what the disk under it can still
// take (Options.DiskRoom, disk.go), and a write or create it cannot take is
// ENOSPC at the call. Growth
// the known quota cannot hold is EDQUOT at write time (data.go), and so is
// an xattr the known quota cannot hold, at setxattr (quota.go). When the
// cloud still refuses an upload or batch for quota or read-only, the data
// stays queued, Status.QuotaBlocked is set (the report: "quota full: top up
// to continue") and the uploader pauses, trying one round per minute. Every
// account refresh (the change feed's account changes: top-up settled,
// voucher, operator quota, usage; the 30 s account poll; a redeem through
// .kumo) that gives more room lifts the pause and resumes the queue at once,
// without a remount; so does an upload of a chunk, or the push of the op
// the cloud refused, going through.
//
// # Metrics (metrics.go)
//
// RegisterMetrics adds kumo_drive_* gauges (cache bytes/budget/hits/misses,
// upload queue files/bytes/ops/running, quota used/limit/full, read-only,
// online) read from Status at scrape time; `kumo mount --metrics ADDR`
// serves them and `--pprof ADDR` net/http/pprof, both on loopback only.
package fs
