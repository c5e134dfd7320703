package server

import (
	"bytes"
	"encoding/json"
	"testing"

	"kumo/remote/api"
)

// FuzzDecodeIdentityRequests: the v2 identity and recovery requests through
// the strict decoder and their validation: no panics, errors are API errors,
// and a request that passes re-encodes to one that passes again.
func FuzzDecodeIdentityRequests(f *testing.F) {
	types := []struct {
		name     string
		new      func() any
		validate func(v any) error
	}{
		{"identity", func() any { return &api.Identity{} }, func(v any) error { return validIdentity(v.(*api.Identity)) }},
		{"recovery set", func() any { return &api.RecoverySetRequest{} }, func(v any) error { return validRecoverySet(v.(*api.RecoverySetRequest)) }},
		{"recovery open", func() any { return &api.RecoveryOpenRequest{} }, func(v any) error {
			r := v.(*api.RecoveryOpenRequest)
			if _, err := normalizeEmail(r.Email); err != nil {
				return err
			}
			if len(r.AuthKey) != authKeySize {
				return badRequest("auth key size")
			}
			return nil
		}},
		{"recovery reset", func() any { return &api.RecoveryResetRequest{} }, func(v any) error {
			_, err := validRecoveryReset(v.(*api.RecoveryResetRequest))
			return err
		}},
	}
	for _, s := range []any{
		api.Identity{Sealed: make([]byte, 169), BoxPublic: make([]byte, 32), SignPublic: make([]byte, 32)},
		api.RecoverySetRequest{AuthKey: make([]byte, 32), RecoveryAuthKey: make([]byte, 32), WrappedMaster: make([]byte, 73)},
		api.RecoveryOpenRequest{Email: "a@b.c", AuthKey: make([]byte, 32)},
		api.RecoveryResetRequest{Email: "a@b.c", AuthKey: make([]byte, 32), NewSalt: make([]byte, 16), NewKDF: defaultKDF,
			NewAuthKey: make([]byte, 32), NewWrappedMaster: make([]byte, 73)},
	} {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"sealed":"AA=="}{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rt := range types {
			v := rt.new()
			if err := decodeJSON(bytes.NewReader(data), v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: decode error is not an API error: %v", rt.name, err)
				}
				continue
			}
			if err := rt.validate(v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: validation error is not an API error: %v", rt.name, err)
				}
				continue
			}
			b, _ := json.Marshal(v)
			w := rt.new()
			if err := decodeJSON(bytes.NewReader(b), w); err != nil {
				t.Fatalf("%s: re-decode of %s: %v", rt.name, b, err)
			}
			if err := rt.validate(w); err != nil {
				t.Fatalf("%s: valid request invalid after round trip: %v", rt.name, err)
			}
		}
	})
}
