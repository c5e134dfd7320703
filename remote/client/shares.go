package client

// Shared folders (docs/API.md "Shared folders"): the owner's and the members'
// calls, and ForShare, the scope that sends tree, chunk and change-feed
// requests to a share of another (or one's own) account.

import (
	"context"
	"net/http"

	"kumo/remote/api"
)

const pathShares = "/v1/shares"

// ForShare returns a client whose every request carries the Kumo-Share
// header naming share of the account ownerID: the server then runs tree,
// chunk and change-feed requests on the owner's tree, limited to the share.
// It uses the session token c holds now.
func (c *Client) ForShare(ownerID string, share uint64) *Client {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return &Client{
		base:       c.base,
		hc:         c.hc,
		log:        c.log,
		maxRetries: c.maxRetries,
		token:      c.token,
		shareScope: api.FormatShareScope(ownerID, share),
	}
}

// ShareScope returns the Kumo-Share header value of a ForShare client ("" otherwise).
func (c *Client) ShareScope() string { return c.shareScope }

// CreateShare makes a directory of the caller's tree a share root.
func (c *Client) CreateShare(ctx context.Context, r api.CreateShareRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathShares, policy: retryNotSent}, r, nil)
}

// Shares lists the shares the caller owns, has joined, and is invited to.
func (c *Client) Shares(ctx context.Context) (api.SharesResponse, error) {
	var resp api.SharesResponse
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathShares, policy: retryAll}, nil, &resp)
	return resp, err
}

// ShareMember invites an account to a share, or changes its role. Safe to
// repeat: it sets the same member and roster again.
func (c *Client) ShareMember(ctx context.Context, share uint64, r api.ShareMemberRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathShares + "/" + api.FormatShareID(share) + "/members", policy: retryAll}, r, nil)
}

// RotateShare moves a share to its next key generation, removing members.
// Not repeated after a failure mid-request: a repeat would ask for a
// generation the server may already have.
func (c *Client) RotateShare(ctx context.Context, share uint64, r api.ShareRotateRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathShares + "/" + api.FormatShareID(share) + "/rotate", policy: retryNotSent}, r, nil)
}

// DeleteShare stops sharing: members lose access, records stay.
func (c *Client) DeleteShare(ctx context.Context, share uint64) error {
	_, _, err := c.do(ctx, call{method: http.MethodDelete, path: pathShares + "/" + api.FormatShareID(share), policy: retryAll})
	return err
}

// AcceptShare accepts an invitation.
func (c *Client) AcceptShare(ctx context.Context, ownerID string, share uint64) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathShares + "/accept", policy: retryAll}, api.ShareAcceptRequest{OwnerID: ownerID, Share: share}, nil)
}

// LeaveShare leaves a joined share (or declines an invitation).
func (c *Client) LeaveShare(ctx context.Context, ownerID string, share uint64) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathShares + "/leave", policy: retryAll}, api.ShareAcceptRequest{OwnerID: ownerID, Share: share}, nil)
}
