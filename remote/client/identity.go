package client

// Format v2 account keys: identity keys and the recovery key (docs/API.md).

import (
	"context"
	"net/http"
	"net/url"

	"kumo/remote/api"
)

const (
	pathIdentity      = "/v1/account/identity"
	pathKeys          = "/v1/keys"
	pathRecovery      = "/v1/account/recovery"
	pathRecoveryOpen  = "/v1/recovery/open"
	pathRecoveryReset = "/v1/recovery/reset"
)

// Identity returns the account's own identity record (empty fields while it has none).
func (c *Client) Identity(ctx context.Context) (api.Identity, error) {
	var id api.Identity
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathIdentity, policy: retryAll}, nil, &id)
	return id, err
}

// PutIdentity publishes the account's identity keys; api.ErrExists if it has
// some already. Safe to repeat: a repeat of one that went through answers
// exists, and the caller then reads them back.
func (c *Client) PutIdentity(ctx context.Context, id api.Identity) error {
	return c.doJSON(ctx, call{method: http.MethodPut, path: pathIdentity, policy: retryAll}, id, nil)
}

// PublicKeys returns the public identity keys the server publishes for email;
// api.ErrNotFound if it has none.
func (c *Client) PublicKeys(ctx context.Context, email string) (api.PublicKeys, error) {
	var pk api.PublicKeys
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathKeys, query: url.Values{"email": {email}}, policy: retryAll}, nil, &pk)
	return pk, err
}

// SetRecovery registers a recovery key, replacing any earlier one. Safe to
// repeat: it sets the same values again.
func (c *Client) SetRecovery(ctx context.Context, r api.RecoverySetRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPut, path: pathRecovery, policy: retryAll}, r, nil)
}

// RecoveryOpen returns the master key wrapped under the recovery key.
func (c *Client) RecoveryOpen(ctx context.Context, r api.RecoveryOpenRequest) (api.RecoveryOpenResponse, error) {
	var resp api.RecoveryOpenResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathRecoveryOpen, policy: retryAll}, r, &resp)
	return resp, err
}

// RecoveryReset sets a new password with the recovery auth key and returns a
// new session. Safe to repeat: the recovery auth key stays valid and a repeat
// sets the same password again (ending the session the first attempt made).
func (c *Client) RecoveryReset(ctx context.Context, r api.RecoveryResetRequest) (api.LoginResponse, error) {
	var resp api.LoginResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathRecoveryReset, policy: retryAll}, r, &resp)
	return resp, err
}
