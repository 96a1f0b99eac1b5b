package probe

// TCPPropagateConst is the BPF constant (bpf/include/goconn.h) the loader
// sets in probes that carry trace context over TCP (--propagate=tcp):
// true only when obsd runs with that mechanism active and spans on. A
// Site whose When names it is attached only then.
const TCPPropagateConst = "tcp_propagate"

// TCPHeadersConst is the BPF constant (bpf/include/goconn.h) the loader
// sets with TCPPropagateConst when the traceparent header injector runs
// (--propagate with headers): the stream sites then also hand each HTTP/2
// stream's context to it.
const TCPHeadersConst = "tcp_headers"

// TCPStreamsWhen is a Site.When for sites that tag an HTTP/2 or gRPC
// stream's context: attached when the TCP option (--propagate with tcp)
// or the header injector (with headers) carries it. Not a BPF constant:
// the loader answers it.
const TCPStreamsWhen = "tcp_streams"

// TCPMaps are the maps a probe including goconn.h shares with
// internal/tcpctx's sock_ops program (its MapOut, MapStreams, MapIn and
// MapSenders).
var TCPMaps = []string{"obsd_tcp_out", "obsd_tcp_streams", "obsd_tcp_in", "obsd_tcp_senders"}

// TCPConnConsts are the offsets goconn.h needs to form a connection's key
// from a net.Conn holding a *net.TCPConn (or a *crypto/tls.Conn over one):
// secondary, since only --propagate=tcp needs them.
func TCPConnConsts() []Const {
	f := func(name, pkg, typ, field string) Const {
		return Const{Name: name, Field: Field{Module: "std", Package: pkg, Struct: typ, Field: field}, Optional: true, Secondary: true}
	}
	return []Const{
		f("off_conn_fd", "net", "conn", "fd"),
		f("off_netfd_laddr", "net", "netFD", "laddr"),
		f("off_netfd_raddr", "net", "netFD", "raddr"),
		f("off_tcpaddr_ip", "net", "TCPAddr", "IP"),
		f("off_tcpaddr_port", "net", "TCPAddr", "Port"),
		f("off_tlsconn_conn", "crypto/tls", "Conn", "conn"),
	}
}

// TCPConnFuncs name the two connection types goconn.h accepts by their
// Close methods (the first of net.Conn's methods, so an itab's first slot).
func TCPConnFuncs() []FuncConst {
	return []FuncConst{
		{Name: "fn_tcpconn_close", Symbol: "net.(*TCPConn).Close", Optional: true},
		{Name: "fn_tlsconn_close", Symbol: "crypto/tls.(*Conn).Close", Optional: true},
	}
}
