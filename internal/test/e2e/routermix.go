package e2e

import "fmt"

// RouterRequest is one request of RouterMix.
type RouterRequest struct{ Method, Path string }

// RouterMix is the request mix sent to the router test services
// (testdata/routers/*): routes at several depths, groups, mounts, a regexp
// parameter, a wildcard, UUIDs, 30 slugs, and requests the routers answer
// 404 or 405 themselves. The routers e2e test and routeharvest's accuracy
// test send the same requests.
func RouterMix() []RouterRequest {
	rs := []RouterRequest{
		{"GET", "/"}, {"GET", "/healthz"}, {"GET", "/orders"}, {"GET", "/orders/"},
		{"GET", "/orders/8f14e45f-ceea-467f-a0e8-1f2b3c4d5e6f"}, {"GET", "/orders/42/items/7"},
		{"GET", "/orders/0b5c0b5d-aaaa-4bbb-8ccc-0123456789ab/items/sku-77"},
		{"POST", "/orders/9/items"}, {"DELETE", "/orders/9/items"}, {"GET", "/api/v1/items/abc-123"},
		{"GET", "/users/12"}, {"GET", "/users/abc"}, {"GET", "/files/a/b/c.txt"},
		{"GET", "/nope"}, {"GET", "/orders/1/nope"}, {"PUT", "/healthz"},
		{"GET", "/things/missing"}, {"GET", "/things/x"},
	}
	for _, a := range "abcdefghij" {
		for _, b := range "xyz" {
			rs = append(rs, RouterRequest{"GET", fmt.Sprintf("/api/v1/users/%c%c-smith", a, b)})
		}
	}
	return rs
}
