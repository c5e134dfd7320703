package hostile

import (
	"net/http"

	"kumo/remote/api"
)

// PointEntry makes the proxy answer every lookup and listing with the entry
// whose name MAC is mac naming node to instead: the server pointing a name at
// another file.
func (p *Proxy) PointEntry(mac string, to api.Node) {
	point := func(e *api.Entry) {
		if e.NameMAC == mac {
			e.Node = to
		}
	}
	p.On(http.MethodGet, "/v1/nodes/*/entries/*", EditJSON(point))
	p.On(http.MethodGet, "/v1/nodes/*/entries", EditJSON(func(es *[]api.Entry) {
		for i := range *es {
			point(&(*es)[i])
		}
	}))
}
