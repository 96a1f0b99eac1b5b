// Package tcpctx holds the sock_ops program that carries W3C trace context
// in an experimental TCP header option (kind 253, ExID 0x0B5C/0x0B5D) and
// the maps it shares with the HTTP probes (bpf/include/tcpctx.h describes
// both). internal/tcpctx loads and attaches it.
package tcpctx

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type tcpctx_key -type tcpctx_out -type tcpctx_stream_key -type tcpctx_in -type tcpctx_rx_key -type tcpctx_counter bpf tcpctx.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu

// Load returns the collection spec of the programs "obsd_tcpctx" (sock_ops)
// and "obsd_tcpctx_headers" (sk_msg) and their maps.
var Load = loadBpf

// The C types of tcpctx.h and the counter indexes, for internal/tcpctx.
type (
	Key       = bpfTcpctxKey
	Out       = bpfTcpctxOut
	StreamKey = bpfTcpctxStreamKey
	In        = bpfTcpctxIn
	RxKey     = bpfTcpctxRxKey
	Counter   = bpfTcpctxCounter
)

// Counter indexes (enum tcpctx_counter).
const (
	CounterWritten     = bpfTcpctxCounterTCPCTX_WRITTEN
	CounterNoSpace     = bpfTcpctxCounterTCPCTX_NO_SPACE
	CounterStoreFailed = bpfTcpctxCounterTCPCTX_STORE_FAILED
	CounterParsed      = bpfTcpctxCounterTCPCTX_PARSED
	CounterInFull      = bpfTcpctxCounterTCPCTX_IN_FULL
	CounterMalformed   = bpfTcpctxCounterTCPCTX_MALFORMED
	CounterFlagsFailed = bpfTcpctxCounterTCPCTX_FLAGS_FAILED
	CounterNetnsFailed = bpfTcpctxCounterTCPCTX_NETNS_FAILED
	CounterHdrInjected = bpfTcpctxCounterTCPCTX_HDR_INJECTED
	CounterHdrPresent  = bpfTcpctxCounterTCPCTX_HDR_PRESENT
	CounterHdrNotHTTP1 = bpfTcpctxCounterTCPCTX_HDR_NOT_HTTP1
	CounterHdrTooLong  = bpfTcpctxCounterTCPCTX_HDR_TOO_LONG
	CounterHdrFailed   = bpfTcpctxCounterTCPCTX_HDR_FAILED
	CounterHdrRaced    = bpfTcpctxCounterTCPCTX_HDR_RACED
	CounterSocksFailed = bpfTcpctxCounterTCPCTX_SOCKS_FAILED
	CounterHdrH2Lost   = bpfTcpctxCounterTCPCTX_HDR_H2LOST
	CounterHdrH2Unread = bpfTcpctxCounterTCPCTX_HDR_H2UNREAD
	CounterHdrH2NoCtx  = bpfTcpctxCounterTCPCTX_HDR_H2NO_CTX
	NumCounters        = int(bpfTcpctxCounterTCPCTX_CNT_MAX)
)
