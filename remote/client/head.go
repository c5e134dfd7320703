package client

// The account head of format v2 (docs/API.md "Account head").

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"kumo/remote/api"
)

const pathHead = "/v1/head"

// Heads returns the account's heads from counter from on (from 0: the current
// one only), and the current counter.
func (c *Client) Heads(ctx context.Context, from uint64) (api.HeadLog, error) {
	var l api.HeadLog
	q := url.Values{}
	if from > 0 {
		q.Set("from", strconv.FormatUint(from, 10))
	}
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathHead, query: q, policy: retryAll}, nil, &l)
	return l, err
}

// PutHead appends head number counter; api.ErrConflict if counter is not the
// next one (another device advanced it first: check the chain again). A repeat
// of one that went through also answers conflict.
func (c *Client) PutHead(ctx context.Context, counter uint64, head []byte) error {
	return c.doJSON(ctx, call{method: http.MethodPut, path: pathHead, policy: retryAll}, api.HeadRequest{Counter: counter, Head: head}, nil)
}
