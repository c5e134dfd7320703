//go:build js && wasm

// Command pwwasm is the link page's password step, compiled to WebAssembly
// (go generate ./internal/linkpage builds static/pw.wasm): the same Go code
// as `kumo get` (internal/link.KeysWithPassword: the parameter checks,
// Argon2id from golang.org/x/crypto/argon2, HKDF-SHA256), so the browser
// derives exactly what the command line does and no Argon2 is written in
// JavaScript. It runs in the page's password worker (static/pw.js) and
// exports one function, kumoLinkKeys.
package main

import (
	"syscall/js"

	"kumo/internal/keys"
	"kumo/internal/link"
)

func main() {
	js.Global().Set("kumoLinkKeys", js.FuncOf(linkKeys))
	select {} // serve calls until the worker ends
}

// linkKeys(id string, secret Uint8Array(32), password Uint8Array, salt
// Uint8Array, time, memoryKiB, threads) returns {key, auth} (Uint8Array(32)
// each) or {error: message}.
func linkKeys(_ js.Value, a []js.Value) any {
	if len(a) != 7 {
		return errResult("kumoLinkKeys wants 7 arguments")
	}
	id, err := link.ParseID(a[0].String())
	if err != nil {
		return errResult(err.Error())
	}
	var s link.Secret
	if a[1].Get("length").Int() != len(s) {
		return errResult("the link secret must be 32 bytes")
	}
	js.CopyBytesToGo(s[:], a[1])
	pw := bytesOf(a[2])
	defer clear(pw)
	p := link.Password{Salt: bytesOf(a[3]), KDF: keys.KDFParams{
		Time: uint32(a[4].Int()), MemoryKiB: uint32(a[5].Int()), Threads: uint8(a[6].Int())}}
	if a[4].Int() < 0 || a[5].Int() < 0 || a[6].Int() < 0 || a[6].Int() > 255 {
		return errResult("link: password parameters out of range")
	}
	k, auth, err := link.KeysWithPassword(id, s, pw, p)
	clear(s[:])
	if err != nil {
		return errResult(err.Error())
	}
	return map[string]any{"key": jsBytes(k[:]), "auth": jsBytes(auth[:])}
}

func bytesOf(v js.Value) []byte {
	b := make([]byte, v.Get("length").Int())
	js.CopyBytesToGo(b, v)
	return b
}

func jsBytes(b []byte) js.Value {
	u := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(u, b)
	return u
}

func errResult(msg string) any { return map[string]any{"error": msg} }
