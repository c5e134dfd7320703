package api

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Shared folders (docs/API.md "Shared folders"). A share is a directory
// subtree of its owner's tree whose records are sealed under the share's own
// key generations; members reach it through the owner's account with the
// ShareHeader on tree, chunk and change-feed requests.

// ShareHeader names the share a tree, chunk or change-feed request runs on:
// "<owner account id>/<share id, 16 lower-case hex>" (FormatShareScope). The
// server then runs the request on the owner's account, limited to the share.
const ShareHeader = "Kumo-Share"

// Share roles and member states.
const (
	RoleReader = "reader" // reads the share's nodes, entries, chunks and feed
	RoleWriter = "writer" // also creates, updates, renames, links and unlinks in it

	MemberInvited  = "invited"  // the owner invited the account; it has not accepted
	MemberAccepted = "accepted" // the account accepted: its share requests are served
)

// Limits on share requests.
const (
	MaxRosterSize   = 256 << 10 // bytes of an owner-signed roster
	MaxWrappedSize  = 8 << 10   // bytes of one wrapped share secret (invitation)
	MaxShareMembers = 1000      // members of one share
	MaxShareGens    = 1 << 20   // key generations of one share (rotations)
)

// CodeCrossShare answers a rename or link that would move an entry into or
// out of a share (409; the drive maps it to EXDEV).
const CodeCrossShare = "cross_share"

// ErrCrossShare is the sentinel of CodeCrossShare for errors.Is.
var ErrCrossShare = &Error{Code: CodeCrossShare}

// CodeStaleGeneration answers a write of a record sealed under a key
// generation older than its share's current one (409), from the owner as
// well as from members: the writer reloads the share, seals again under the
// current generation (re-encrypting the chunks a file's attributes name) and
// retries. The refusal keeps an honest server from storing bytes a removed
// member can read and keeps the write from being lost; it does not protect
// against a hostile server, which has already received the old-generation
// chunks and records of the refused write (docs/API.md).
const CodeStaleGeneration = "stale_generation"

// ErrStaleGeneration is the sentinel of CodeStaleGeneration for errors.Is.
var ErrStaleGeneration = &Error{Code: CodeStaleGeneration}

// RecordShare returns the key id (share, generation) in the clear header of a
// sealed record (node attributes or an entry's sealed name): a v2 record
// starts 0x02 || u64be(share) || u32be(generation); any other first byte is a
// v1 record of the home tree (share 0, generation 0). ok is false for an
// empty record or a v2 header cut short. It does not authenticate anything:
// the server uses it only to decide which share a record claims to be in.
func RecordShare(b []byte) (share uint64, gen uint32, ok bool) {
	const v2, headerLen = 0x02, 1 + 8 + 4
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] != v2 {
		return 0, 0, true
	}
	if len(b) < headerLen {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[1:9]), binary.BigEndian.Uint32(b[9:13]), true
}

// FormatShareScope is the ShareHeader value for share of owner's account.
func FormatShareScope(owner string, share uint64) string {
	return fmt.Sprintf("%s/%016x", owner, share)
}

// ParseShareScope reads a ShareHeader value: a 32-character lower-case hex
// account id, '/', and a share id of 16 lower-case hex characters, not 0.
func ParseShareScope(s string) (owner string, share uint64, err error) {
	owner, hexShare, found := strings.Cut(s, "/")
	if !found || !validAccountID(owner) {
		return "", 0, fmt.Errorf("%w: %s wants OWNER_ID/SHARE (32 and 16 hex characters)", ErrInvalidID, ShareHeader)
	}
	share, err = ParseShareID(hexShare)
	if err != nil {
		return "", 0, err
	}
	return owner, share, nil
}

// FormatShareID is a share id as it appears in paths (/v1/shares/{share}):
// 16 lower-case hex characters.
func FormatShareID(share uint64) string { return fmt.Sprintf("%016x", share) }

// ParseShareID reads a share id of exactly 16 lower-case hex characters, not 0.
func ParseShareID(s string) (uint64, error) {
	if len(s) != 16 || !isLowerHexString(s) {
		return 0, fmt.Errorf("%w: a share id is 16 lower-case hex characters", ErrInvalidID)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: share id 0 is the home tree, not a share", ErrInvalidID)
	}
	return v, nil
}

func validAccountID(s string) bool { return len(s) == 32 && isLowerHexString(s) }

func isLowerHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ShareWrapped is one generation's share secret wrapped for one member
// (an invitation blob, docs/FORMAT.md §3g); opaque to the server.
type ShareWrapped struct {
	Generation uint32 `json:"generation"`
	Blob       []byte `json:"blob"`
}

// CreateShareRequest (POST /v1/shares) makes the directory Root of the
// caller's tree the root of share Share at generation Generation (>= 1).
// Roster is the owner-signed member list, opaque to the server.
type CreateShareRequest struct {
	Share      uint64 `json:"share"`
	Root       uint64 `json:"root"`
	Generation uint32 `json:"generation"`
	Roster     []byte `json:"roster"`
}

// ShareMember is one member of an owned share as the owner sees it.
type ShareMember struct {
	Email string `json:"email"`
	Role  string `json:"role"`
	State string `json:"state"` // MemberInvited or MemberAccepted
}

// OwnedShare is a share of the caller's tree.
type OwnedShare struct {
	Share      uint64        `json:"share"`
	Root       uint64        `json:"root"`
	Generation uint32        `json:"generation"`
	Roster     []byte        `json:"roster"`
	Members    []ShareMember `json:"members"`
}

// JoinedShare is a share of another account that the caller accepted.
// Wrapped holds the caller's wrapped secrets of every generation it was given.
type JoinedShare struct {
	OwnerID    string         `json:"owner_id"`
	OwnerEmail string         `json:"owner_email"`
	Share      uint64         `json:"share"`
	Root       uint64         `json:"root"`
	Generation uint32         `json:"generation"`
	Role       string         `json:"role"`
	Roster     []byte         `json:"roster"`
	Wrapped    []ShareWrapped `json:"wrapped"`
}

// ShareInvitation is a share the caller was invited to and has not accepted.
// Root and Generation are given too (the wrapped secret also holds the root,
// authenticated by the owner's signature: trust that one).
type ShareInvitation struct {
	OwnerID    string         `json:"owner_id"`
	OwnerEmail string         `json:"owner_email"`
	Share      uint64         `json:"share"`
	Root       uint64         `json:"root,omitempty"`
	Generation uint32         `json:"generation,omitempty"`
	Role       string         `json:"role"`
	Roster     []byte         `json:"roster"`
	Wrapped    []ShareWrapped `json:"wrapped"`
}

// SharesResponse answers GET /v1/shares.
type SharesResponse struct {
	Owned       []OwnedShare      `json:"owned"`
	Joined      []JoinedShare     `json:"joined"`
	Invitations []ShareInvitation `json:"invitations"`
}

// ShareMemberRequest (POST /v1/shares/{share}/members) invites the account
// of Email with Role, or changes the role of a member; Roster is the new
// owner-signed roster; Wrapped the share's secrets wrapped for that account
// (at least the current generation's for a new member).
type ShareMemberRequest struct {
	Email   string         `json:"email"`
	Role    string         `json:"role"`
	Wrapped []ShareWrapped `json:"wrapped"`
	Roster  []byte         `json:"roster"`
}

// ShareRotateRequest (POST /v1/shares/{share}/rotate) moves the share to
// Generation (the current one + 1), removes the members in Remove at once,
// and gives every remaining member its wrapped secret of the new generation
// (Wrapped, by e-mail).
type ShareRotateRequest struct {
	Generation uint32                    `json:"generation"`
	Roster     []byte                    `json:"roster"`
	Remove     []string                  `json:"remove,omitempty"`
	Wrapped    map[string][]ShareWrapped `json:"wrapped"`
}

// ShareAcceptRequest is the body of POST /v1/shares/accept and
// POST /v1/shares/leave.
type ShareAcceptRequest struct {
	OwnerID string `json:"owner_id"`
	Share   uint64 `json:"share"`
}
