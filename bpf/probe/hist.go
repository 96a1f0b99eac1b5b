package probe

import (
	"encoding/binary"
	"fmt"
)

// SumHist sums one in-kernel histogram over the CPUs: each value is
// struct hist of bpf/include/metrics.h (and the HTTP server's
// http_server_metric, laid out alike): n u64 bucket counts, not
// cumulative, then the u64 sum of the durations in ns.
func SumHist(perCPU [][]byte, n int) (buckets []uint64, sumNS uint64, err error) {
	size := 8 * (n + 1)
	buckets = make([]uint64, n)
	ne := binary.NativeEndian
	for _, c := range perCPU {
		if len(c) < size {
			return nil, 0, fmt.Errorf("%d-byte histogram, want %d", len(c), size)
		}
		for i := range buckets {
			buckets[i] += ne.Uint64(c[8*i:])
		}
		sumNS += ne.Uint64(c[8*n:])
	}
	return buckets, sumNS, nil
}

// Name is one value of a probe's names map (MetricsMap.Names): struct
// obsd_name of bpf/include/metrics.h, one or two strings back to back.
type Name struct {
	A, B  string
	Flags uint8
}

// nameMax is NAME_MAX_LEN of bpf/include/metrics.h; a probe's test checks
// it and the layout below against its generated type.
const nameMax = 256

// NameSize is the size of struct obsd_name.
const NameSize = 8 + nameMax

// DecodeName reads one struct obsd_name: u16 len_a, u16 len_b, u8 flags,
// three bytes of padding, then the bytes of both strings.
func DecodeName(val []byte) (Name, error) {
	if len(val) != NameSize {
		return Name{}, fmt.Errorf("decoding name: %d bytes, want %d", len(val), NameSize)
	}
	ne := binary.NativeEndian
	a, b := int(ne.Uint16(val)), int(ne.Uint16(val[2:]))
	if a+b > nameMax {
		return Name{}, fmt.Errorf("decoding name: lengths %d and %d, at most %d in all", a, b, nameMax)
	}
	data := val[8:]
	return Name{A: string(data[:a]), B: string(data[a : a+b]), Flags: val[4]}, nil
}
