package fs

import (
	"sync/atomic"
	"testing"

	"kumo/remote/api"
)

// TestCoreQuotaBlockKeptWhenRefusedOpNotSent: the quota block the pusher's
// refusal set lifts only when the op refused for quota goes through, not
// whenever some op is acked. Here the cloud refuses a directory's create
// for quota, then for good for another reason (the op is acked, undone, and
// reported): nothing showed room, so the drive stays blocked. Before, any
// acked op with no quota refusal in its round lifted the block.
func TestCoreQuotaBlockKeptWhenRefusedOpNotSent(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	var tries atomic.Int32
	d := pushDirCreate(t, c, func(api.BatchOp) *api.BatchResult {
		if tries.Add(1) == 1 {
			return &api.BatchResult{Error: &api.Error{Code: api.CodeQuota, Message: "quota exceeded"}}
		}
		return &api.BatchResult{Error: &api.Error{Code: api.CodeBadRequest, Message: "refused"}}
	})
	if tries.Load() < 2 {
		t.Fatalf("the create was answered %d time(s), want a quota refusal then a refusal for good", tries.Load())
	}
	if _, ok := cloudRootNames(t, c)["dir"]; ok {
		t.Fatal("the create refused for good is in the cloud")
	}
	if !d.Status().QuotaBlocked {
		t.Fatal("the quota block lifted though the op refused for quota never went through")
	}
}
