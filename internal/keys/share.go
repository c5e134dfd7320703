package keys

import (
	"crypto/rand"
	"fmt"
)

// ShareSubkeys returns the subkeys of generation gen of share root share, from
// the share's secret. Every label names the share and the generation, so no
// two share generations ever use a key in common. The home tree (share 0,
// generation 0) does not use this: its keys are the account's Derive(master).
// See docs/FORMAT.md "Share roots".
func ShareSubkeys(secret Key, share uint64, gen uint32) Subkeys {
	label := func(purpose string) string {
		return fmt.Sprintf("kumo/v2/share/%016x/%08x/%s", share, gen, purpose)
	}
	return Subkeys{
		Attrs:   expand(secret[:], label("attrs")),
		Names:   expand(secret[:], label("names")),
		ChunkID: expand(secret[:], label("chunk-id")),
		Chunks:  expand(secret[:], label("chunks")),
		Cache:   expand(secret[:], label("cache")),
	}
}

// NewShareSecret returns a fresh random share secret (one per share generation).
func NewShareSecret() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("keys: share secret: %w", err)
	}
	return k, nil
}
