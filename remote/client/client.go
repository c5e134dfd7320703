// Package client is the drive's and the CLI's client of the kumo cloud: typed
// errors (api.ErrNotFound, ...), retries with backoff on transient failures,
// connection reuse and context deadlines.
package client

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"kumo/remote/api"
)

// Options configure a Client.
type Options struct {
	BaseURL    string       // e.g. http://127.0.0.1:8080 (no trailing /v1)
	Token      string       // bearer session token, may be set later with SetToken
	HTTPClient *http.Client // nil: a tuned default with connection reuse
	Logger     *slog.Logger
	// MaxRetries for transient failures (connection errors, 5xx, 429); 0: 4.
	MaxRetries int
}

// Client talks to one server. Safe for concurrent use.
type Client struct{}

func New(o Options) (*Client, error) { panic("TODO") }

func (c *Client) SetToken(tok string) { panic("TODO") }

func (c *Client) Prelogin(ctx context.Context, email string) (api.PreloginResponse, error) {
	panic("TODO")
}
func (c *Client) Signup(ctx context.Context, r api.SignupRequest) (api.LoginResponse, error) {
	panic("TODO")
}
func (c *Client) Login(ctx context.Context, r api.LoginRequest) (api.LoginResponse, error) {
	panic("TODO")
}
func (c *Client) Logout(ctx context.Context) error                                { panic("TODO") }
func (c *Client) ChangePassword(ctx context.Context, r api.PasswordRequest) error { panic("TODO") }
func (c *Client) Account(ctx context.Context) (api.Account, error)                { panic("TODO") }

func (c *Client) GetNode(ctx context.Context, id uint64) (api.Node, error)  { panic("TODO") }
func (c *Client) List(ctx context.Context, dir uint64) ([]api.Entry, error) { panic("TODO") }
func (c *Client) Lookup(ctx context.Context, parent uint64, nameMAC string) (api.Entry, error) {
	panic("TODO")
}
func (c *Client) Create(ctx context.Context, r api.CreateRequest) (api.Entry, error) {
	panic("TODO")
}
func (c *Client) Update(ctx context.Context, id uint64, r api.UpdateRequest) (api.Node, error) {
	panic("TODO")
}
func (c *Client) Rename(ctx context.Context, r api.RenameRequest) error          { panic("TODO") }
func (c *Client) Link(ctx context.Context, r api.LinkRequest) (api.Entry, error) { panic("TODO") }
func (c *Client) Unlink(ctx context.Context, r api.UnlinkRequest) error          { panic("TODO") }
func (c *Client) Batch(ctx context.Context, r api.BatchRequest) (api.BatchResponse, error) {
	panic("TODO")
}

// PutChunk uploads a sealed chunk. Uploading a chunk the server has is a cheap no-op.
func (c *Client) PutChunk(ctx context.Context, id string, sealed []byte) error { panic("TODO") }

// GetChunk reads length bytes at off of a sealed chunk (HTTP Range); length < 0 reads all.
func (c *Client) GetChunk(ctx context.Context, id string, off, length int64) ([]byte, error) {
	panic("TODO")
}

func (c *Client) HaveChunks(ctx context.Context, ids []string) ([]bool, error) { panic("TODO") }

// Changes long-polls the change feed for changes after seq, waiting up to wait.
func (c *Client) Changes(ctx context.Context, after uint64, wait time.Duration) (api.ChangesResponse, error) {
	panic("TODO")
}
