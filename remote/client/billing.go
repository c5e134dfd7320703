package client

// Top-up invoices, vouchers, health, and the operator's /v1/admin calls.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"kumo/remote/api"
)

const (
	pathTopup         = "/v1/topup"
	pathInvoices      = "/v1/invoices"
	pathRedeem        = "/v1/redeem"
	pathHealth        = "/healthz"
	pathAdminAccounts = "/v1/admin/accounts"
	pathAdminQuota    = "/v1/admin/quota"
	pathAdminDisable  = "/v1/admin/disable"
	pathAdminVouchers = "/v1/admin/vouchers"
	pathAdminBackup   = "/v1/admin/backup"
	pathAdminAttn     = "/v1/admin/invoices/attention"
)

// SetAdminToken sets the token of the /v1/admin calls.
func (c *Client) SetAdminToken(tok string) {
	c.mu.Lock()
	c.adminToken = tok
	c.mu.Unlock()
}

// authorize sets the bearer token of a request: the admin token for admin
// calls, else the session token.
func (c *Client) authorize(req *http.Request, admin bool) {
	c.mu.RLock()
	tok := c.token
	if admin {
		tok = c.adminToken
	}
	c.mu.RUnlock()
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
}

// ErrNoAdminToken is returned by admin calls on a client without an admin token.
var ErrNoAdminToken = errors.New("client: no admin token (the server keeps it in DATA/admin-token)")

func (c *Client) requireAdmin() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.adminToken == "" {
		return ErrNoAdminToken
	}
	return nil
}

// Topup asks for a Bitcoin invoice. Not repeated after a failure mid-request:
// a repeat could leave a second open invoice behind.
func (c *Client) Topup(ctx context.Context, r api.TopupRequest) (api.Invoice, error) {
	var inv api.Invoice
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathTopup, policy: retryNotSent}, r, &inv)
	return inv, err
}

// Invoices lists the account's top-up invoices, newest first.
func (c *Client) Invoices(ctx context.Context) ([]api.Invoice, error) {
	var r api.InvoicesResponse
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathInvoices, policy: retryAll}, nil, &r)
	return r.Invoices, err
}

// Redeem spends a voucher code. Not repeated after a failure mid-request: a
// repeat of a redeem that went through would be refused as used.
func (c *Client) Redeem(ctx context.Context, code string) (api.RedeemResponse, error) {
	var r api.RedeemResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathRedeem, policy: retryNotSent}, api.RedeemRequest{Code: code}, &r)
	return r, err
}

// Health checks GET /healthz (no authentication).
func (c *Client) Health(ctx context.Context) error {
	_, _, err := c.do(ctx, call{method: http.MethodGet, path: pathHealth, policy: retryNotSent})
	return err
}

// AdminAccounts lists every account.
func (c *Client) AdminAccounts(ctx context.Context) ([]api.AdminAccount, error) {
	if err := c.requireAdmin(); err != nil {
		return nil, err
	}
	var out []api.AdminAccount
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathAdminAccounts, policy: retryAll, admin: true}, nil, &out)
	return out, err
}

// AdminSetQuota sets an account's base quota (idempotent).
func (c *Client) AdminSetQuota(ctx context.Context, email string, limit int64) error {
	if err := c.requireAdmin(); err != nil {
		return err
	}
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathAdminQuota, policy: retryAll, admin: true},
		api.AdminQuotaRequest{Email: email, Limit: limit}, nil)
}

// AdminDisable disables (or, with disabled false, enables) an account (idempotent).
func (c *Client) AdminDisable(ctx context.Context, email string, disabled bool) error {
	if err := c.requireAdmin(); err != nil {
		return err
	}
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathAdminDisable, policy: retryAll, admin: true},
		api.AdminDisableRequest{Email: email, Disabled: disabled}, nil)
}

// AdminVouchers creates single-use voucher codes. Not repeated after a failure
// mid-request: a repeat would mint a second batch.
func (c *Client) AdminVouchers(ctx context.Context, r api.AdminVoucherRequest) ([]string, error) {
	if err := c.requireAdmin(); err != nil {
		return nil, err
	}
	var resp api.AdminVoucherResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathAdminVouchers, policy: retryNotSent, admin: true}, r, &resp)
	return resp.Codes, err
}

// AdminAttention lists the invoices an operator should look at (paid late,
// or a credited payment lost to a reorg), newest first.
func (c *Client) AdminAttention(ctx context.Context) ([]api.Invoice, error) {
	if err := c.requireAdmin(); err != nil {
		return nil, err
	}
	var r api.InvoicesResponse
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathAdminAttn, policy: retryAll, admin: true}, nil, &r)
	return r.Invoices, err
}

// AdminBackup streams an online backup of the server's metadata (badger's
// backup format) into w and returns the bytes written. It is not retried: w
// may already hold part of the stream.
func (c *Client) AdminBackup(ctx context.Context, w io.Writer) (int64, error) {
	if err := c.requireAdmin(); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+pathAdminBackup, nil)
	if err != nil {
		return 0, fmt.Errorf("client: backup: %w", err)
	}
	c.authorize(req, true)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, c.connFailure(call{method: http.MethodGet, path: pathAdminBackup}, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, fmt.Errorf("GET %s: %w", pathAdminBackup, decodeError(resp.StatusCode, b))
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("client: backup: after %d bytes: %w", n, err)
	}
	return n, nil
}
