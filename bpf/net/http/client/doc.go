// Package client is the probe for net/http clients: every round trip of an
// http.Transport, from the entry of (*Transport).roundTrip to the RET that
// returns its response or error (see probe.bpf.c).
package client
