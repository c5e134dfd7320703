package hostile

import (
	"encoding/json"
	"net/http"
)

// PointEntry makes the proxy answer every lookup and listing with the entry
// whose name MAC is mac naming node to (any value that encodes as the API's
// node, e.g. an api.Node) instead: the server pointing a name at another
// file. It edits the JSON as it is, so this package needs no API types.
func (p *Proxy) PointEntry(mac string, to any) {
	node, err := json.Marshal(to)
	if err != nil {
		panic("hostile: PointEntry: " + err.Error())
	}
	point := func(e map[string]json.RawMessage) {
		var m string
		if json.Unmarshal(e["name_mac"], &m) == nil && m == mac {
			e["node"] = node
		}
	}
	p.On(http.MethodGet, "/v1/nodes/*/entries/*", EditJSON(func(e *map[string]json.RawMessage) { point(*e) }))
	p.On(http.MethodGet, "/v1/nodes/*/entries", EditJSON(func(es *[]map[string]json.RawMessage) {
		for _, e := range *es {
			point(e)
		}
	}))
}
