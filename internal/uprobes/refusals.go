package uprobes

import (
	"errors"

	"github.com/obsd-dev/obsd/internal/inspect"
)

// maxRefused bounds the refusal cache. Entries normally die with the last
// process running the binary (Detach); the bound covers callers that never
// detach and nodes with more distinct refused binaries than that.
const maxRefused = 1024

// permanentReasons are the inspect reasons that a later attempt on the same
// file cannot change: the bytes of the executable decide them. Every other
// reason (the file unreadable now, the kernel refusing a program or a link,
// an unclassified error) may pass, so the caller retries it with backoff.
var permanentReasons = map[string]bool{
	inspect.ReasonNotELF:    true,
	inspect.ReasonNotGo:     true,
	inspect.ReasonGoVersion: true,
	inspect.ReasonSymbol:    true,
	inspect.ReasonPrologue:  true,
	inspect.ReasonOffsets:   true,
	inspect.ReasonVersion:   true,
	inspect.ReasonArch:      true,
	inspect.ReasonInlined:   true,
	inspect.ReasonCorrupt:   true,
}

// Permanent reports whether an Attach error is about the binary itself, so
// retrying the same file is pointless; false for transient errors (worth a
// retry with backoff) and for a process that exited.
func Permanent(err error) bool {
	var e *inspect.Error
	return errors.As(err, &e) && permanentReasons[e.Reason]
}

// refusal is a binary refused for a permanent reason.
type refusal struct {
	err  error
	pids map[int]bool // processes refused for it and not yet detached
	used uint64       // Manager.tick at the last lookup, for LRU eviction
}

// refusals caches permanent refusals by binary, so a node full of non-Go
// processes costs one inspection and one log line per binary. Guarded by
// Manager.mu.
type refusals struct {
	byBin map[binKey]*refusal
	byPID map[int]binKey
	tick  uint64
}

func newRefusals() *refusals {
	return &refusals{byBin: map[binKey]*refusal{}, byPID: map[int]binKey{}}
}

// lookup returns the cached refusal of key and records pid as refused.
func (r *refusals) lookup(key binKey, pid int) (error, bool) {
	ref, ok := r.byBin[key]
	if !ok {
		return nil, false
	}
	r.tick++
	ref.used = r.tick
	r.note(key, ref, pid)
	return ref.err, true
}

// add caches a permanent refusal of key for pid, evicting the least
// recently used entry when full.
func (r *refusals) add(key binKey, pid int, err error) {
	if len(r.byBin) >= maxRefused {
		var oldest binKey
		var min uint64 = ^uint64(0)
		for k, ref := range r.byBin {
			if ref.used < min {
				oldest, min = k, ref.used
			}
		}
		r.drop(oldest)
	}
	r.tick++
	ref := &refusal{err: err, pids: map[int]bool{}, used: r.tick}
	r.byBin[key] = ref
	r.note(key, ref, pid)
}

func (r *refusals) note(key binKey, ref *refusal, pid int) {
	if old, ok := r.byPID[pid]; ok && old != key {
		r.release(pid)
	}
	ref.pids[pid] = true
	r.byPID[pid] = key
}

// release forgets that pid was refused; the entry dies with its last
// process, so a binary replaced under the same inode is inspected anew.
func (r *refusals) release(pid int) {
	key, ok := r.byPID[pid]
	if !ok {
		return
	}
	delete(r.byPID, pid)
	if ref := r.byBin[key]; ref != nil {
		delete(ref.pids, pid)
		if len(ref.pids) == 0 {
			delete(r.byBin, key)
		}
	}
}

func (r *refusals) drop(key binKey) {
	if ref := r.byBin[key]; ref != nil {
		for pid := range ref.pids {
			delete(r.byPID, pid)
		}
	}
	delete(r.byBin, key)
}

// len is the number of binaries cached.
func (r *refusals) len() int { return len(r.byBin) }
