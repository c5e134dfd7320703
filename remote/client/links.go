package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"kumo/remote/api"
)

// ErrBadAnswer: the server's answer does not have the form the API says.
var ErrBadAnswer = errors.New("malformed answer from the server")

// Routes of read-only links (docs/API.md "Links").
const (
	pathLinks  = "/v1/links"
	pathPublic = "/v1/s/"
)

// CreateLink stores a link (sealed manifest, pinned chunks). Not repeated
// after a failure mid-request: a repeat would answer 409 for a link made.
func (c *Client) CreateLink(ctx context.Context, r api.LinkCreateRequest) (api.LinkCreateResponse, error) {
	var resp api.LinkCreateResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathLinks, policy: retryNotSent}, r, &resp)
	return resp, err
}

// Links lists the account's links.
func (c *Client) Links(ctx context.Context) ([]api.LinkInfo, error) {
	var resp api.LinksResponse
	if err := c.doJSON(ctx, call{method: http.MethodGet, path: pathLinks, policy: retryAll}, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Links, nil
}

// DeleteLink revokes a link and unpins its chunks.
func (c *Client) DeleteLink(ctx context.Context, id string) error {
	if !validLinkID(id) {
		return fmt.Errorf("client: delete link: invalid link id %q", id)
	}
	_, _, err := c.do(ctx, call{method: http.MethodDelete, path: pathLinks + "/" + id, policy: retryAll})
	return err
}

// The public calls below need no session: a Client made with no token
// (New with Options.Token empty) reads a link.

// PublicLink reads a link's blob, or its password parameters.
func (c *Client) PublicLink(ctx context.Context, id string) (api.LinkPublic, error) {
	var resp api.LinkPublic
	if !validLinkID(id) {
		return resp, fmt.Errorf("client: invalid link id %q", id)
	}
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathPublic + id, policy: retryAll}, nil, &resp)
	return resp, err
}

// OpenLink gets a password-protected link's blob against the auth key
// derived from the password. Not repeated after a failure mid-request: each
// attempt counts against the rate limit.
func (c *Client) OpenLink(ctx context.Context, id string, auth []byte) ([]byte, error) {
	if !validLinkID(id) {
		return nil, fmt.Errorf("client: invalid link id %q", id)
	}
	var resp api.LinkOpenResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathPublic + id + "/open", policy: retryNotSent},
		api.LinkOpenRequest{Auth: auth}, &resp)
	return resp.Blob, err
}

// LinkChunk reads a sealed chunk through a link.
func (c *Client) LinkChunk(ctx context.Context, id, chunkID string, buf []byte) ([]byte, error) {
	if !validLinkID(id) || !api.ValidHexID(chunkID) {
		return nil, fmt.Errorf("client: link chunk: %w", api.ErrInvalidID)
	}
	b, _, err := c.do(ctx, call{method: http.MethodGet, path: pathPublic + id + "/chunks/" + chunkID, policy: retryAll,
		limit: api.MaxChunkBody, into: buf})
	return b, err
}

// LinkChunks reads several sealed chunks through a link in one request,
// GET /v1/s/ID/chunks?ids=A,B,... (distinct ids, at most
// api.MaxLinkBatchChunks): chunk i must be sizes[i] bytes (its sealed size
// from the manifest). The answer goes into buf when it fits; the chunks are
// slices of it, in the order asked for. A frame of another length, a short
// answer or bytes after the last frame are an error: the server is not
// trusted (the caller still checks each chunk's bytes).
func (c *Client) LinkChunks(ctx context.Context, id string, ids []string, sizes []int, buf []byte) ([][]byte, error) {
	if !validLinkID(id) {
		return nil, fmt.Errorf("client: link chunks: %w", api.ErrInvalidID)
	}
	if len(ids) == 0 || len(ids) > api.MaxLinkBatchChunks || len(sizes) != len(ids) {
		return nil, fmt.Errorf("client: link chunks: %d ids (%d sizes), want 1..%d", len(ids), len(sizes), api.MaxLinkBatchChunks)
	}
	total := 0
	for i, c := range ids {
		if !api.ValidHexID(c) || sizes[i] < 0 {
			return nil, fmt.Errorf("client: link chunks: %w", api.ErrInvalidID)
		}
		total += 4 + sizes[i]
	}
	b, _, err := c.do(ctx, call{method: http.MethodGet, path: pathPublic + id + "/chunks",
		query: url.Values{"ids": {strings.Join(ids, ",")}}, policy: retryAll, limit: int64(total) + 1, into: buf})
	if err != nil {
		return nil, err
	}
	out, err := splitLinkFrames(b, sizes)
	if err != nil {
		return nil, fmt.Errorf("client: link chunks %s...: %w", ids[0], err)
	}
	return out, nil
}

// splitLinkFrames splits an answer of GET /v1/s/ID/chunks into its frames
// (4 bytes big-endian length, then that many bytes), frame i exactly
// sizes[i] bytes long, and nothing after the last.
func splitLinkFrames(b []byte, sizes []int) ([][]byte, error) {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		if n < 0 || len(b) < 4 || binary.BigEndian.Uint32(b) != uint32(n) || len(b)-4 < n {
			return nil, fmt.Errorf("the answer's frame %d is not the %d bytes asked for: %w", i, n, ErrBadAnswer)
		}
		out[i], b = b[4:4+n:4+n], b[4+n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last chunk: %w", len(b), ErrBadAnswer)
	}
	return out, nil
}

// validLinkID: 22 base64url characters, so the id is a single path element.
func validLinkID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
