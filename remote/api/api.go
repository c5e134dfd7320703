// Package api holds the wire types of the kumo cloud's HTTP API (/v1) shared by
// the server and the client. Every byte the server stores about a user's files
// arrives here already sealed by the client; see docs/API.md and docs/FORMAT.md.
package api

import (
	"errors"
	"fmt"
	"time"
)

// RootID is the node id of every account's root directory.
const RootID uint64 = 1

// Node types as the server sees them. Symlinks, fifos and regular files are all
// "file" to the server: only the client, inside the sealed attributes, knows more.
const (
	TypeDir  = "dir"
	TypeFile = "file"
)

// Limits the server enforces on requests.
const (
	MaxJSONBody   = 4 << 20 // bytes of a JSON request body
	MaxChunkBody  = 5 << 20 // bytes of a sealed chunk upload (4 MiB chunk + overhead)
	MaxAttrsSize  = 2 << 20 // bytes of sealed attributes of one node
	MaxNameSize   = 512     // bytes of a sealed name
	MaxHaveBatch  = 10000   // chunk ids per /v1/chunks/have request
	MaxBatchOps   = 1000    // operations per /v1/batch request
	HexIDLen      = 64      // hex characters of a chunk id or name MAC (32 bytes)
	MaxEmailLen   = 254
	MaxChangeWait = 60 * time.Second
)

// KDFParams are the Argon2id parameters of an account, chosen by the client at
// signup and returned by prelogin.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// PreloginRequest asks for an account's salt. Unknown e-mails get a stable fake salt.
type PreloginRequest struct {
	Email string `json:"email"`
}

type PreloginResponse struct {
	Salt []byte    `json:"salt"` // 16 bytes
	KDF  KDFParams `json:"kdf"`
}

// SignupRequest creates an account. AuthKey is derived from the password on the
// client; the server stores only a hash of it. RootAttrs are the sealed attributes
// of the root directory (node RootID).
type SignupRequest struct {
	Email         string    `json:"email"`
	Salt          []byte    `json:"salt"`
	KDF           KDFParams `json:"kdf"`
	AuthKey       []byte    `json:"auth_key"`       // 32 bytes
	WrappedMaster []byte    `json:"wrapped_master"` // master key sealed with the key-encryption key
	RootAttrs     []byte    `json:"root_attrs"`
	// Token is the session token the client will use if the account is
	// created (64 lower-case hex characters of fresh random bytes): the
	// answer is the same whether or not the e-mail had an account, so the
	// session cannot be in it. Voucher is an invitation code, spent by the
	// signup (required when the server takes signups by voucher only).
	Token   string `json:"token"`
	Voucher string `json:"voucher,omitempty"`
}

// SignupResponse is the answer to every accepted signup (202), whether the
// account was created or the e-mail had one already: no account enumeration.
// The client learns which with its first request on Token (401: the e-mail
// had an account, and the caller must log in with its password).
type SignupResponse struct {
	Expires time.Time `json:"expires"` // of Token, if the account was created
}

type LoginRequest struct {
	Email   string `json:"email"`
	AuthKey []byte `json:"auth_key"`
}

type LoginResponse struct {
	Token         string    `json:"token"`
	Expires       time.Time `json:"expires"`
	WrappedMaster []byte    `json:"wrapped_master"`
	Account       Account   `json:"account"`
}

// PasswordRequest changes the password: new salt, new auth key, and the same
// master key re-wrapped with the new key-encryption key. All sessions but the
// calling one are ended.
type PasswordRequest struct {
	OldAuthKey       []byte    `json:"old_auth_key"`
	NewSalt          []byte    `json:"new_salt"`
	NewKDF           KDFParams `json:"new_kdf"`
	NewAuthKey       []byte    `json:"new_auth_key"`
	NewWrappedMaster []byte    `json:"new_wrapped_master"`
}

// Account is what the server tells a logged-in client about its account.
type Account struct {
	ID          string    `json:"id"`
	Email       string    `json:"email"`
	QuotaUsed   int64     `json:"quota_used"`  // bytes of stored chunks, deduplicated
	QuotaLimit  int64     `json:"quota_limit"` // bytes
	Plan        string    `json:"plan"`
	PlanExpires time.Time `json:"plan_expires,omitempty"`
	ReadOnly    bool      `json:"read_only"` // plan expired while over quota
	Seq         uint64    `json:"seq"`       // newest change sequence number
	// History (server side of snapshots, trash and versions): bytes kept only
	// for history (part of QuotaUsed), the retention window, and the oldest
	// moment a snapshot can show (zero: history off).
	HistoryUsed      int64     `json:"history_used,omitempty"`
	HistoryRetention Duration  `json:"history_retention,omitempty"`
	HistoryFrom      time.Time `json:"history_from,omitempty"`
	// HistoryFreed is when history was last cut short to make room for a write
	// on a full quota (zero: never).
	HistoryFreed time.Time `json:"history_freed,omitempty"`
}

// Node is one inode of the tree. Attrs are sealed by the client and bound to ID.
// Chunks are the hex ids of the chunks the node references (for quota and GC);
// the sealed attributes hold the authoritative chunk list.
type Node struct {
	ID      uint64   `json:"id"`
	Type    string   `json:"type"`
	Version uint64   `json:"version"` // bumped by every update; used for optimistic concurrency
	Nlink   uint32   `json:"nlink"`
	Parent  uint64   `json:"parent,omitempty"` // directories only
	Attrs   []byte   `json:"attrs"`
	Chunks  []string `json:"chunks,omitempty"`
	Seq     uint64   `json:"seq"` // change sequence number of its last change
	// Since is when this version became current (server clock, Unix ns; 0:
	// before history was kept). Snapshots at T show versions with Since <= T.
	Since int64 `json:"since,omitempty"`
}

// Entry is one directory entry, with the node it names (readdirplus).
type Entry struct {
	Parent  uint64 `json:"parent"`
	NameMAC string `json:"name_mac"` // hex of the keyed MAC of the name under Parent
	Name    []byte `json:"name"`     // sealed name
	Node    Node   `json:"node"`
}

// CreateRequest creates a node (ID chosen by the client, random, never 0 or 1)
// and its entry in Parent. Fails with CodeExists if the name is taken.
type CreateRequest struct {
	Parent  uint64   `json:"parent"`
	NameMAC string   `json:"name_mac"`
	Name    []byte   `json:"name"`
	ID      uint64   `json:"id"`
	Type    string   `json:"type"`
	Attrs   []byte   `json:"attrs"`
	Chunks  []string `json:"chunks,omitempty"`
}

// UpdateRequest replaces a node's sealed attributes and chunk list if the node is
// still at Version; otherwise the server answers CodeConflict and changes nothing.
type UpdateRequest struct {
	Version uint64   `json:"version"`
	Attrs   []byte   `json:"attrs"`
	Chunks  []string `json:"chunks"`
}

// Rename modes.
const (
	RenamePlain     = ""          // replace an existing target like rename(2)
	RenameNoReplace = "noreplace" // fail with CodeExists if the target exists
	RenameExchange  = "exchange"  // swap the two entries atomically; both must exist
)

// RenameRequest moves an entry. Name is the entry's sealed name under DstParent;
// for exchange, SrcName is the target's sealed name under SrcParent.
type RenameRequest struct {
	SrcParent  uint64 `json:"src_parent"`
	SrcNameMAC string `json:"src_name_mac"`
	DstParent  uint64 `json:"dst_parent"`
	DstNameMAC string `json:"dst_name_mac"`
	Name       []byte `json:"name"`
	SrcName    []byte `json:"src_name,omitempty"`
	Mode       string `json:"mode,omitempty"`
	// Node and DstNode, when not 0, are the nodes the client believes the
	// source and (for an exchange) destination entries name: v2 names are
	// sealed for their node, so the server refuses (CodeConflict) to move an
	// entry that names another node now, rather than give it a name that
	// cannot open. A rename of an entry onto itself with a new Name replaces
	// its sealed name (format migration).
	Node    uint64 `json:"node,omitempty"`
	DstNode uint64 `json:"dst_node,omitempty"`
}

// LinkRequest adds a hard link to a file node.
type LinkRequest struct {
	ID      uint64 `json:"id"`
	Parent  uint64 `json:"parent"`
	NameMAC string `json:"name_mac"`
	Name    []byte `json:"name"`
}

// UnlinkRequest removes an entry; with Dir it is rmdir (refused unless empty).
// Node is the node the client saw at the name (0: not sent, by older
// clients); the cloud refuses (CodeConflict) an unlink of an entry that
// names another node now, and the drive uses it to recognise the entry
// when it must find it again under another name MAC (a share's re-seal),
// so that it never removes another node that took the name.
type UnlinkRequest struct {
	Parent  uint64 `json:"parent"`
	NameMAC string `json:"name_mac"`
	Dir     bool   `json:"dir"`
	Node    uint64 `json:"node,omitempty"`
}

type HaveRequest struct {
	IDs []string `json:"ids"`
}

type HaveResponse struct {
	Have []bool `json:"have"`
}

// Change kinds on the change feed.
const (
	ChangeNode    = "node"    // a node's attributes or chunks changed (or it was deleted)
	ChangeEntry   = "entry"   // an entry was added or removed under Parent
	ChangeAccount = "account" // quota, plan, or top-up state changed
)

// Change is one mutation on the feed. The client refetches what it names.
type Change struct {
	Seq     uint64 `json:"seq"`
	Kind    string `json:"kind"`
	Node    uint64 `json:"node,omitempty"`
	Parent  uint64 `json:"parent,omitempty"`
	NameMAC string `json:"name_mac,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// ChangesResponse answers GET /v1/changes?after=N&wait=SECONDS. Reset means the
// feed no longer holds changes after N: the client must relist its tree.
type ChangesResponse struct {
	Changes []Change `json:"changes"`
	Seq     uint64   `json:"seq"`
	Reset   bool     `json:"reset,omitempty"`
}

// Error codes in error responses: {"error":{"code":..., "message":...}}.
const (
	CodeBadRequest   = "bad_request"    // 400
	CodeUnauthorized = "unauthorized"   // 401
	CodeForbidden    = "forbidden"      // 403
	CodeReadOnly     = "read_only"      // 403: plan expired while over quota
	CodeNotFound     = "not_found"      // 404
	CodeConflict     = "conflict"       // 409: stale version
	CodeExists       = "exists"         // 409: name taken
	CodeNotEmpty     = "not_empty"      // 409: rmdir of a non-empty directory
	CodeNotDir       = "not_dir"        // 409: operation needs a directory
	CodeIsDir        = "is_dir"         // 409: operation needs a non-directory
	CodeInvalidMove  = "invalid_move"   // 400: directory moved under itself
	CodeTooLarge     = "too_large"      // 413
	CodeRateLimited  = "rate_limited"   // 429
	CodeQuota        = "quota_exceeded" // 507
	CodeNodeLimit    = "node_limit"     // 507: the account has as many nodes as the server allows
	CodeHistoryGone  = "history_gone"   // 410: a moment older than the history the account keeps
	CodeInternal     = "internal"       // 500
	CodeUnavailable  = "unavailable"    // 503 or no connection (client side only)
)

// Error is an error answer of the API.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type ErrorResponse struct {
	Error Error `json:"error"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Is makes errors.Is(err, api.ErrNotFound) etc. work on *Error values.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == 0 && t.Message == "" && t.Code == e.Code
}

// Sentinels for errors.Is. Compare by code only.
var (
	ErrBadRequest   = &Error{Code: CodeBadRequest}
	ErrUnauthorized = &Error{Code: CodeUnauthorized}
	ErrForbidden    = &Error{Code: CodeForbidden}
	ErrReadOnly     = &Error{Code: CodeReadOnly}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrConflict     = &Error{Code: CodeConflict}
	ErrExists       = &Error{Code: CodeExists}
	ErrNotEmpty     = &Error{Code: CodeNotEmpty}
	ErrNotDir       = &Error{Code: CodeNotDir}
	ErrIsDir        = &Error{Code: CodeIsDir}
	ErrInvalidMove  = &Error{Code: CodeInvalidMove}
	ErrTooLarge     = &Error{Code: CodeTooLarge}
	ErrRateLimited  = &Error{Code: CodeRateLimited}
	ErrQuota        = &Error{Code: CodeQuota}
	ErrNodeLimit    = &Error{Code: CodeNodeLimit}
	ErrHistoryGone  = &Error{Code: CodeHistoryGone}
	ErrInternal     = &Error{Code: CodeInternal}
	ErrUnavailable  = &Error{Code: CodeUnavailable}
)

// ValidHexID reports whether s is a 64-character lower-case hex id (chunk id or name MAC).
func ValidHexID(s string) bool {
	if len(s) != HexIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ErrInvalidID is returned by parsers of ids.
var ErrInvalidID = errors.New("invalid id")

// Batch operation kinds for POST /v1/batch.
const (
	OpCreate = "create"
	OpUpdate = "update"
	OpRename = "rename"
	OpLink   = "link"
	OpUnlink = "unlink"
)

// BatchOp is one tree mutation of a batch. Exactly the field named by Op is set;
// Update also needs ID.
type BatchOp struct {
	Op     string         `json:"op"`
	ID     uint64         `json:"id,omitempty"`
	Create *CreateRequest `json:"create,omitempty"`
	Update *UpdateRequest `json:"update,omitempty"`
	Rename *RenameRequest `json:"rename,omitempty"`
	Link   *LinkRequest   `json:"link,omitempty"`
	Unlink *UnlinkRequest `json:"unlink,omitempty"`
}

// BatchRequest applies up to MaxBatchOps operations in order, each in its own
// transaction (a failed op does not undo earlier ones, and later ones still run).
// It saves round trips when a drive writes back many small changes.
type BatchRequest struct {
	Ops []BatchOp `json:"ops"`
}

// BatchResult is the outcome of one op: Error is nil on success; Node is set for
// create, update and link.
type BatchResult struct {
	Error *Error `json:"error,omitempty"`
	Node  *Node  `json:"node,omitempty"`
}

type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// --- payments and vouchers (/v1/topup, /v1/invoices, /v1/redeem) ---

// Invoice states, as BTCPay Server names them.
const (
	InvoiceNew        = "New"
	InvoiceProcessing = "Processing"
	InvoiceSettled    = "Settled"
	InvoiceExpired    = "Expired"
	InvoiceInvalid    = "Invalid"
)

// Invoice flags.
const (
	FlagPartial     = "partial"      // paid less than the amount so far
	FlagOver        = "over"         // paid more than the amount (credited anyway)
	FlagLate        = "late"         // payment arrived after expiry: the operator decides
	FlagLostPayment = "lost_payment" // a settled invoice's payment vanished in a reorg: operator attention
)

// TopupRequest asks for a Bitcoin invoice for Bytes of quota for Months.
type TopupRequest struct {
	Bytes  int64 `json:"bytes"`
	Months int   `json:"months"`
}

// Invoice is a Bitcoin top-up invoice as the server reports it.
type Invoice struct {
	ID            string    `json:"id"`
	Bytes         int64     `json:"bytes"`
	Months        int       `json:"months"`
	AmountSat     int64     `json:"amount_sat"`
	AmountBTC     string    `json:"amount_btc"` // 8 decimals
	PaidSat       int64     `json:"paid_sat"`
	Address       string    `json:"address"`
	URI           string    `json:"uri"` // BIP21
	State         string    `json:"state"`
	Flags         []string  `json:"flags,omitempty"`
	Confirmations int       `json:"confirmations"`
	Required      int       `json:"required_confirmations"`
	Created       time.Time `json:"created"`
	Expires       time.Time `json:"expires"`
	// Operator views only (GET /v1/admin/invoices/attention).
	AccountID string `json:"account_id,omitempty"`
	Attention string `json:"attention,omitempty"` // why an operator should look
}

type InvoicesResponse struct {
	Invoices []Invoice `json:"invoices"`
}

type RedeemRequest struct {
	Code string `json:"code"`
}

type RedeemResponse struct {
	Bytes   int64   `json:"bytes"`
	Days    int     `json:"days"`
	Account Account `json:"account"`
}

// Payment and voucher error codes.
const (
	CodePaymentsOff = "payments_disabled" // 501: the server has no Bitcoin configuration
	CodeBadVoucher  = "bad_voucher"       // 400: unknown or malformed code
	CodeUsedVoucher = "used_voucher"      // 409: already redeemed
)

var (
	ErrPaymentsOff = &Error{Code: CodePaymentsOff}
	ErrBadVoucher  = &Error{Code: CodeBadVoucher}
	ErrUsedVoucher = &Error{Code: CodeUsedVoucher}
)

// --- administration (/v1/admin/..., bearer admin token) ---

// AdminAccount is an account as the operator sees it.
type AdminAccount struct {
	ID         string    `json:"id"`
	Email      string    `json:"email"`
	QuotaUsed  int64     `json:"quota_used"`
	QuotaLimit int64     `json:"quota_limit"`
	Disabled   bool      `json:"disabled"`
	Created    time.Time `json:"created"`
}

type AdminQuotaRequest struct {
	Email string `json:"email"`
	Limit int64  `json:"limit"` // base quota in bytes (purchases come on top)
}

type AdminDisableRequest struct {
	Email    string `json:"email"`
	Disabled bool   `json:"disabled"`
}

type AdminVoucherRequest struct {
	Bytes int64 `json:"bytes"`
	Days  int   `json:"days"`
	Count int   `json:"count"`
}

type AdminVoucherResponse struct {
	Codes []string `json:"codes"`
}

// --- identity keys and recovery key (format v2; see docs/FORMAT.md) ---

// Limits of the identity and recovery records.
const (
	PublicKeySize     = 32   // bytes of an X25519 or Ed25519 public key
	MaxSealedIdentity = 1024 // bytes of a sealed identity
)

// Identity is an account's identity keys as the server keeps them: the
// private halves sealed by the client under its master key (with the public
// halves inside), and the public halves in clear for other accounts.
// PUT /v1/account/identity publishes them once; GET returns them (all fields
// empty while the account has none).
type Identity struct {
	Sealed     []byte `json:"sealed"`
	BoxPublic  []byte `json:"box_public"`  // X25519
	SignPublic []byte `json:"sign_public"` // Ed25519
}

// PublicKeys answers GET /v1/keys?email=E: another account's public keys.
type PublicKeys struct {
	Email      string `json:"email"`
	BoxPublic  []byte `json:"box_public"`
	SignPublic []byte `json:"sign_public"`
}

// RecoverySetRequest registers a recovery key (PUT /v1/account/recovery),
// replacing any earlier one. AuthKey is the current password's auth key;
// RecoveryAuthKey is derived from the recovery key (the server stores only a
// hash of it); WrappedMaster is the master key wrapped under the recovery key.
type RecoverySetRequest struct {
	AuthKey         []byte `json:"auth_key"`
	RecoveryAuthKey []byte `json:"recovery_auth_key"`
	WrappedMaster   []byte `json:"wrapped_master"`
}

// RecoveryOpenRequest (POST /v1/recovery/open) asks, with the recovery auth
// key, for the master key wrapped under the recovery key.
type RecoveryOpenRequest struct {
	Email   string `json:"email"`
	AuthKey []byte `json:"auth_key"` // recovery auth key
}

type RecoveryOpenResponse struct {
	WrappedMaster []byte `json:"wrapped_master"`
}

// RecoveryResetRequest (POST /v1/recovery/reset) sets a new password with the
// recovery auth key: new salt, parameters, auth key and password wrapping of
// the master key. Every session of the account ends; the answer is a new one
// (LoginResponse).
type RecoveryResetRequest struct {
	Email            string    `json:"email"`
	AuthKey          []byte    `json:"auth_key"` // recovery auth key
	NewSalt          []byte    `json:"new_salt"`
	NewKDF           KDFParams `json:"new_kdf"`
	NewAuthKey       []byte    `json:"new_auth_key"`
	NewWrappedMaster []byte    `json:"new_wrapped_master"`
}

// --- account head (format v2; /v1/head) ---

// MaxHeadSize bounds an account head's bytes (the client's format is 89 bytes).
const MaxHeadSize = 256

// HeadRequest advances the account head: Counter must be the current
// counter + 1 (CodeConflict otherwise), Head the client's MAC'd record.
type HeadRequest struct {
	Counter uint64 `json:"counter"`
	Head    []byte `json:"head"`
}

// HeadLog is GET /v1/head?from=N: the heads with counters N, N+1, ... (at most
// 1000), and the current counter (0: the account has no head yet).
type HeadLog struct {
	Current uint64   `json:"current"`
	Heads   [][]byte `json:"heads"`
}

// LiveUsed is the usage of what the tree holds now: history (part of
// QuotaUsed) gives way to new data when the quota is full.
func (a Account) LiveUsed() int64 { return a.QuotaUsed - a.HistoryUsed }

// Duration is a time.Duration that travels as whole seconds.
type Duration int64

func (d Duration) D() time.Duration { return time.Duration(d) * time.Second }

// History (server-kept versions; see docs/API.md "History"). Times travel as
// Unix nanoseconds of the server's clock; a snapshot at T is the tree after
// every change at or before T.

// HistoryListResponse answers GET /v1/history/entries?parent=ID&at=T: the
// entries of directory ID at T, each with its node as it was at T.
type HistoryListResponse struct {
	At      int64   `json:"at"`
	Entries []Entry `json:"entries"`
}

// Version is one version of a node: current from Since until Until (0: it is
// the current version).
type Version struct {
	Until int64 `json:"until,omitempty"`
	Node  Node  `json:"node"`
}

// VersionsResponse answers GET /v1/history/versions/{id}, newest first.
type VersionsResponse struct {
	Versions []Version `json:"versions"`
}

// TrashItem is a node deleted within the retention window, with the entry
// that named it last.
type TrashItem struct {
	Deleted int64  `json:"deleted"`
	Parent  uint64 `json:"parent"`
	NameMAC string `json:"name_mac"`
	Name    []byte `json:"name"` // sealed name
	Node    Node   `json:"node"` // its last version
}

// TrashResponse answers GET /v1/history/trash?after=T (deleted after T),
// oldest first, at most MaxTrashPage items; Cursor (if set) asks for the next
// page (?cursor=).
type TrashResponse struct {
	Items  []TrashItem `json:"items"`
	Cursor string      `json:"cursor,omitempty"`
}

// MaxTrashPage is the most items one trash answer holds.
const MaxTrashPage = 5000

// HistoryTimesResponse answers GET /v1/history/times: the hours (Unix ns of
// the hour's start) in which the tree changed, oldest first, within the window.
type HistoryTimesResponse struct {
	From  int64   `json:"from"` // oldest moment a snapshot can show
	Hours []int64 `json:"hours"`
}

// PurgeRequest frees history early: versions that ended before Before (0:
// now), of every node or, with Node set, of that node and everything that
// was below it.
type PurgeRequest struct {
	Before int64  `json:"before,omitempty"`
	Node   uint64 `json:"node,omitempty"`
}

// PurgeResponse says how much was freed.
type PurgeResponse struct {
	Versions int   `json:"versions"`
	Bytes    int64 `json:"bytes"` // attributes and names freed now; chunks follow at the next GC
}

// RetentionRequest sets the account's retention window (at most the
// server's maximum; 0 turns history off for the account).
type RetentionRequest struct {
	Retention Duration `json:"retention"`
}

// --- read-only links (/v1/links, /v1/s/{id}; docs/API.md "Links") ---

// Limits of links, and their error codes.
const (
	MaxLinkBlob   = 16 << 20 // bytes of a link's sealed manifest
	MaxLinkChunks = 100000   // chunks one link pins
	MaxLinkBody   = 32 << 20 // bytes of a POST /v1/links body (base64 blob and chunk ids)

	// GET /v1/s/{id}/chunks?ids=...: chunks and sealed bytes one answer holds.
	MaxLinkBatchChunks = 16
	MaxLinkBatchBytes  = 64 << 20

	CodeLinkNotFound  = "link_not_found" // 404: unknown or revoked link
	CodeLinkExpired   = "link_expired"   // 410
	CodeWrongPassword = "wrong_password" // 403: the link's password auth key does not match
)

var (
	ErrLinkNotFound  = &Error{Code: CodeLinkNotFound}
	ErrLinkExpired   = &Error{Code: CodeLinkExpired}
	ErrWrongPassword = &Error{Code: CodeWrongPassword}
)

// LinkPassword is a link password's Argon2id salt and parameters, and (only
// when a link is created) SHA-256 of the auth key derived from it.
type LinkPassword struct {
	Salt     []byte    `json:"salt"`
	KDF      KDFParams `json:"kdf"`
	AuthHash []byte    `json:"auth_hash,omitempty"`
}

// LinkCreateRequest makes a link: ID (22 base64url characters, chosen by the
// client), its sealed manifest, the chunks it pins, an optional expiry and
// password.
type LinkCreateRequest struct {
	ID       string        `json:"id"`
	Blob     []byte        `json:"blob"`
	Chunks   []string      `json:"chunks"`
	Expires  *time.Time    `json:"expires,omitempty"`
	Password *LinkPassword `json:"password,omitempty"`
}

// LinkCreateResponse is the answer to POST /v1/links.
type LinkCreateResponse struct {
	ID      string     `json:"id"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
}

// LinkInfo is one of an account's links in GET /v1/links: Chunks pinned
// and their sealed Bytes.
type LinkInfo struct {
	ID          string     `json:"id"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"`
	HasPassword bool       `json:"has_password"`
	Chunks      int        `json:"chunks"`
	Bytes       int64      `json:"bytes"`
}

// LinksResponse is GET /v1/links.
type LinksResponse struct {
	Links []LinkInfo `json:"links"`
}

// LinkPublic is GET /v1/s/{id}: the blob, or for a password-protected link
// the password's salt and parameters (the blob then comes from POST
// /v1/s/{id}/open).
type LinkPublic struct {
	Blob     []byte        `json:"blob,omitempty"`
	Password *LinkPassword `json:"password,omitempty"`
	Expires  *time.Time    `json:"expires,omitempty"`
}

// LinkOpenRequest is POST /v1/s/{id}/open: the auth key derived from the password.
type LinkOpenRequest struct {
	Auth []byte `json:"auth"`
}

// LinkOpenResponse is the answer to a right password.
type LinkOpenResponse struct {
	Blob []byte `json:"blob"`
}
