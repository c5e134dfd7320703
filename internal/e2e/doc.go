// Package e2e holds kumo's end-to-end test suites. They drive a real `kumo mount`
// with real tools (rsync, tar, git, sqlite3, fio) and run every suite against a plain
// local directory as well, so that the suites themselves are checked on any machine.
//
// The package has no non-test code besides this comment; run it with
//
//	go test -count=1 ./internal/e2e/
//
// Environment: CI=true turns every skip for a missing FUSE/binary into a failure;
// KUMO_E2E_BIN uses a prebuilt binary instead of building ./cmd/kumo;
// KUMO_DIFF_SEED replays a differential run; KUMO_E2E_BIG=1 makes the memory test
// copy 4 GiB instead of 1 GiB.
package e2e
