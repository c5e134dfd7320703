package payment

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// maxRPCResponse bounds a node answer: a 4 MB block is 8 MB of hex, and a
// large mempool list is a few MB.
const maxRPCResponse = 64 << 20

// RPCError is an error answered by the node.
type RPCError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *RPCError) Error() string { return fmt.Sprintf("node rpc error %d: %s", e.Code, e.Message) }

// rpcClient speaks JSON-RPC 1.0 over HTTP POST with basic auth, the dialect
// that both bitcoind and btcd answer.
type rpcClient struct {
	url        string
	user, pass string
	hc         *http.Client
	id         atomic.Uint64
}

func newRPCClient(cfg *Config) (*rpcClient, error) {
	if cfg.RPCHost == "" {
		return nil, errors.New("node RPC host is not configured")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	scheme := "http"
	if cfg.RPCTLS {
		scheme = "https"
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.RPCInsecureSkipVerify}
		pem := cfg.RPCCert
		if len(pem) == 0 && cfg.RPCCertFile != "" {
			var err error
			if pem, err = os.ReadFile(cfg.RPCCertFile); err != nil {
				return nil, fmt.Errorf("read node RPC certificate: %w", err)
			}
		}
		if len(pem) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("node RPC certificate: no PEM certificate found")
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	return &rpcClient{
		url:  scheme + "://" + cfg.RPCHost + "/",
		user: cfg.RPCUser,
		pass: cfg.RPCPassword,
		hc:   &http.Client{Transport: tr, Timeout: cfg.RPCTimeout},
	}, nil
}

type rpcRequest struct {
	JSONRPC string `json:"jsonrpc"`
	ID      uint64 `json:"id"`
	Method  string `json:"method"`
	Params  []any  `json:"params"`
}

type rpcResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *RPCError       `json:"error"`
}

// Call runs one RPC and returns its raw JSON result.
func (c *rpcClient) Call(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
	if params == nil {
		params = []any{}
	}
	body, err := json.Marshal(rpcRequest{JSONRPC: "1.0", ID: c.id.Add(1), Method: method, Params: params})
	if err != nil {
		return nil, fmt.Errorf("rpc %s: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("rpc %s: %w", method, err)
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rpc %s: %w", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCResponse+1))
	if err != nil {
		return nil, fmt.Errorf("rpc %s: read answer: %w", method, err)
	}
	if len(data) > maxRPCResponse {
		return nil, fmt.Errorf("rpc %s: answer larger than %d bytes", method, maxRPCResponse)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, fmt.Errorf("rpc %s: node refused credentials (HTTP %d)", method, resp.StatusCode)
	}
	// bitcoind answers errors with HTTP 404/500 and a JSON body, so the body
	// is decoded whatever the status.
	res, err := decodeRPCResponse(data)
	if err != nil {
		return nil, fmt.Errorf("rpc %s (HTTP %d): %w", method, resp.StatusCode, err)
	}
	return res, nil
}

// decodeRPCResponse extracts the result of a JSON-RPC answer.
func decodeRPCResponse(data []byte) (json.RawMessage, error) {
	var r rpcResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if len(r.Result) == 0 {
		return nil, errors.New("answer has no result")
	}
	return r.Result, nil
}

func (c *rpcClient) blockCount(ctx context.Context) (int64, error) {
	raw, err := c.Call(ctx, "getblockcount")
	if err != nil {
		return 0, err
	}
	return decodeHeight(raw)
}

func decodeHeight(raw json.RawMessage) (int64, error) {
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("decode block count: %w", err)
	}
	if n < 0 {
		return 0, fmt.Errorf("negative block count %d", n)
	}
	return n, nil
}

func (c *rpcClient) blockHash(ctx context.Context, height int64) (chainhash.Hash, error) {
	raw, err := c.Call(ctx, "getblockhash", height)
	if err != nil {
		return chainhash.Hash{}, err
	}
	return decodeHash(raw)
}

func decodeHash(raw json.RawMessage) (chainhash.Hash, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return chainhash.Hash{}, fmt.Errorf("decode hash: %w", err)
	}
	if len(s) != 2*chainhash.HashSize {
		return chainhash.Hash{}, fmt.Errorf("decode hash: length %d", len(s))
	}
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("decode hash: %w", err)
	}
	return *h, nil
}

// block fetches a block as raw bytes (getblock verbosity 0) and parses it.
func (c *rpcClient) block(ctx context.Context, hash chainhash.Hash) (*wire.MsgBlock, error) {
	raw, err := c.Call(ctx, "getblock", hash.String(), 0)
	if err != nil {
		return nil, err
	}
	blk, err := decodeBlock(raw)
	if err != nil {
		return nil, err
	}
	if got := blk.BlockHash(); got != hash {
		return nil, fmt.Errorf("node sent block %s for %s", got, hash)
	}
	return blk, nil
}

func decodeHexResult(raw json.RawMessage) ([]byte, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("decode hex string: %w", err)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode hex: %w", err)
	}
	return b, nil
}

func decodeBlock(raw json.RawMessage) (*wire.MsgBlock, error) {
	b, err := decodeHexResult(raw)
	if err != nil {
		return nil, fmt.Errorf("block: %w", err)
	}
	var blk wire.MsgBlock
	r := bytes.NewReader(b)
	if err := blk.Deserialize(r); err != nil {
		return nil, fmt.Errorf("parse block: %w", err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("parse block: %d trailing bytes", r.Len())
	}
	return &blk, nil
}

func (c *rpcClient) rawMempool(ctx context.Context) ([]chainhash.Hash, error) {
	raw, err := c.Call(ctx, "getrawmempool")
	if err != nil {
		return nil, err
	}
	return decodeMempool(raw)
}

func decodeMempool(raw json.RawMessage) ([]chainhash.Hash, error) {
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, fmt.Errorf("decode mempool: %w", err)
	}
	out := make([]chainhash.Hash, 0, len(ids))
	for _, s := range ids {
		if len(s) != 2*chainhash.HashSize {
			return nil, fmt.Errorf("decode mempool: bad txid %q", s)
		}
		h, err := chainhash.NewHashFromStr(s)
		if err != nil {
			return nil, fmt.Errorf("decode mempool: %w", err)
		}
		out = append(out, *h)
	}
	return out, nil
}

// rawTx fetches a transaction as raw bytes (verbose 0) and parses it.
func (c *rpcClient) rawTx(ctx context.Context, txid chainhash.Hash) (*wire.MsgTx, error) {
	raw, err := c.Call(ctx, "getrawtransaction", txid.String(), 0)
	if err != nil {
		return nil, err
	}
	tx, err := decodeTx(raw)
	if err != nil {
		return nil, err
	}
	if got := tx.TxHash(); got != txid {
		return nil, fmt.Errorf("node sent transaction %s for %s", got, txid)
	}
	return tx, nil
}

func decodeTx(raw json.RawMessage) (*wire.MsgTx, error) {
	b, err := decodeHexResult(raw)
	if err != nil {
		return nil, fmt.Errorf("transaction: %w", err)
	}
	var tx wire.MsgTx
	r := bytes.NewReader(b)
	if err := tx.Deserialize(r); err != nil {
		return nil, fmt.Errorf("parse transaction: %w", err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("parse transaction: %d trailing bytes", r.Len())
	}
	return &tx, nil
}

// isNotFound reports a node error meaning "no such transaction/block", which
// both nodes answer with code -5 (RPC_INVALID_ADDRESS_OR_KEY) or, for btcd,
// -5/-8 variants with "not found"/"No information" messages.
func isNotFound(err error) bool {
	var re *RPCError
	if !errors.As(err, &re) {
		return false
	}
	return re.Code == -5 || strings.Contains(strings.ToLower(re.Message), "not found")
}
