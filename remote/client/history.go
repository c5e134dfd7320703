package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"kumo/remote/api"
)

// History: the tree at a moment, versions, trash, purge and retention
// (docs/API.md "History"). Times are Unix ns of the server's clock.

func atQuery(at int64) url.Values {
	return url.Values{"at": {strconv.FormatInt(at, 10)}}
}

// ListAt lists directory dir as it was at at, each entry with its node then.
func (c *Client) ListAt(ctx context.Context, dir uint64, at int64) ([]api.Entry, error) {
	var r api.HistoryListResponse
	q := atQuery(at)
	q.Set("parent", strconv.FormatUint(dir, 10))
	err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/history/entries", query: q, policy: retryAll}, nil, &r)
	return r.Entries, err
}

// NodeAt returns node id as it was at at.
func (c *Client) NodeAt(ctx context.Context, id uint64, at int64) (api.Node, error) {
	var n api.Node
	err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/history/nodes/" + strconv.FormatUint(id, 10), query: atQuery(at), policy: retryAll}, nil, &n)
	return n, err
}

// Versions lists node id's kept versions, newest (the current one, if any) first.
func (c *Client) Versions(ctx context.Context, id uint64) ([]api.Version, error) {
	var r api.VersionsResponse
	err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/history/versions/" + strconv.FormatUint(id, 10), policy: retryAll}, nil, &r)
	return r.Versions, err
}

// Trash lists the nodes deleted after after (Unix ns; 0: the whole window),
// oldest first, all pages.
func (c *Client) Trash(ctx context.Context, after int64) ([]api.TrashItem, error) {
	var all []api.TrashItem
	cursor := ""
	for {
		q := url.Values{"after": {strconv.FormatInt(after, 10)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var r api.TrashResponse
		if err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/history/trash", query: q, policy: retryAll}, nil, &r); err != nil {
			return all, err
		}
		all = append(all, r.Items...)
		if r.Cursor == "" {
			return all, nil
		}
		cursor = r.Cursor
	}
}

// HistoryTimes returns the oldest moment a snapshot can show and the hours
// in which the tree changed since.
func (c *Client) HistoryTimes(ctx context.Context) (api.HistoryTimesResponse, error) {
	var r api.HistoryTimesResponse
	err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/history/times", policy: retryAll}, nil, &r)
	return r, err
}

// PurgeHistory frees history early (see api.PurgeRequest).
func (c *Client) PurgeHistory(ctx context.Context, r api.PurgeRequest) (api.PurgeResponse, error) {
	var out api.PurgeResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: "/v1/history/purge", policy: retryAll}, r, &out)
	return out, err
}

// SetRetention sets the account's retention window.
func (c *Client) SetRetention(ctx context.Context, r api.RetentionRequest) (api.Account, error) {
	var a api.Account
	err := c.doJSON(ctx, call{method: http.MethodPut, path: "/v1/account/retention", policy: retryAll}, r, &a)
	return a, err
}
