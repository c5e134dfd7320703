package fs

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"kumo/internal/hostile"
	"kumo/remote/api"
)

// TestCoreHostileUnlinkConflictReported: a server that answers an unlink
// with 409 conflict while the entry still names the node unlinked (no
// other device replaced it) does not get the refusal dropped quietly as
// the benign race (TestCoreUnlinkOfReplacedFileQuiet): the drive looks the
// name up, finds the same node, and lists the refusal in .kumo. Before, any
// 409 to an unlink was dropped unreported.
func TestCoreHostileUnlinkConflictReported(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	p := hostile.Start(t, c.url)
	d := coreDriveAt(t, c, t.TempDir(), viaURL(t, c, p.URL), nil)
	coreFile(t, d, api.RootID, "doc", "kept\n")
	coreFlush(t, d)

	p.On(http.MethodPost, "/v1/batch", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		var br api.BatchRequest
		if err := json.Unmarshal(req.Body, &br); err != nil || len(br.Ops) == 0 {
			return next(req)
		}
		var out api.BatchResponse
		for _, op := range br.Ops {
			if op.Op != api.OpUnlink {
				return next(req)
			}
			out.Results = append(out.Results, api.BatchResult{Error: &api.Error{Code: api.CodeConflict, Message: "another node has the name"}})
		}
		b, _ := json.Marshal(out)
		return &hostile.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
	})
	if e := d.unlink(api.RootID, "doc", false); e != 0 {
		t.Fatalf("unlink: %v", e)
	}
	coreFlush(t, d)
	if n := p.Count(http.MethodPost, "/v1/batch"); n == 0 {
		t.Fatal("the unlink was never sent: the test refuses nothing")
	}
	d.ctl.mu.Lock()
	n := d.ctl.refusedN
	d.ctl.mu.Unlock()
	if n == 0 {
		t.Fatal("an unlink refused as a conflict while the name still holds the same node is not reported")
	}
	if txt := coreControlText(t, d); !strings.Contains(txt, "will never accept") {
		t.Fatalf(".kumo does not list the refused unlink:\n%s", txt)
	}
}
