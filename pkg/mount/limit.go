package mount

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/paddock-csi/paddock/pkg/metrics"
)

// ErrBusy means every slot for this server is held by calls stuck past their deadline (a dead or hung
// server); the call was refused without touching the server. Callers map it to gRPC Unavailable.
var ErrBusy = errors.New("every call slot for this NFS server is held by a call stuck past its deadline")

// defaultPerKey is the bound NewLimiter uses when it is given none.
const defaultPerKey = 16

// Limiter bounds the calls in flight per key (an NFS server). A slot is held until the call really
// returns, not until its caller gives up, so a dead server costs at most perKey stuck calls (and OS
// threads) however often it is asked. The zero value is not usable; use NewLimiter. A nil *Limiter
// limits nothing.
type Limiter struct {
	perKey int

	mu   sync.Mutex
	keys map[string]*keyState // only keys with holders or waiters
}

// keyState is one key's slots; every field is guarded by Limiter.mu.
type keyState struct {
	held    int           // slots taken and not released, overran ones included
	overran int           // of held: marked Overran
	waiters int           // Acquires waiting for a slot
	wake    chan struct{} // closed (and cleared) when a slot frees or a holder overruns; nil if nobody waits
}

// Slot is one call's hold on a key's slot, from Acquire until Release.
type Slot struct {
	l        *Limiter // nil for a slot of a nil Limiter
	key      string
	ks       *keyState
	overran  bool // guarded by l.mu
	released bool // guarded by l.mu
}

// NewLimiter returns a Limiter allowing perKey calls in flight per key (perKey <= 0: 16).
func NewLimiter(perKey int) *Limiter {
	if perKey <= 0 {
		perKey = defaultPerKey
	}
	return &Limiter{perKey: perKey, keys: map[string]*keyState{}}
}

// PerKey is the number of slots per key.
func (l *Limiter) PerKey() int {
	if l == nil {
		return 0
	}
	return l.perKey
}

// Acquire takes one of key's slots. It waits (until ctx ends) while slots are held by calls still
// within their deadline, but fails at once with an error wrapping ErrBusy (naming the key and how many
// calls are stuck) when every slot is held by a call marked Overran. A nil Limiter hands out a slot
// that limits nothing.
func (l *Limiter) Acquire(ctx context.Context, key string) (*Slot, error) {
	if l == nil {
		return &Slot{key: key}, nil
	}
	if err := ctx.Err(); err != nil { // a call started now would only overrun at once
		return nil, fmt.Errorf("call to NFS server %s not started: %w", key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.keys[key]
	if ks == nil {
		ks = &keyState{}
		l.keys[key] = ks
	}
	for {
		if ks.held < l.perKey {
			ks.held++
			return &Slot{l: l, key: key, ks: ks}, nil
		}
		if ks.overran >= l.perKey {
			err := l.busy(key, ks.overran)
			l.drop(key, ks)
			return nil, err
		}
		if ks.wake == nil {
			ks.wake = make(chan struct{})
		}
		wake := ks.wake
		ks.waiters++
		l.mu.Unlock()
		var done bool
		select {
		case <-wake:
		case <-ctx.Done():
			done = true
		}
		l.mu.Lock()
		ks.waiters--
		if done {
			err := fmt.Errorf("waiting for a call slot of NFS server %s (%d calls in flight, %d of them stuck past their deadline): %w",
				key, ks.held, ks.overran, ctx.Err())
			l.drop(key, ks)
			return nil, err
		}
	}
}

func (l *Limiter) busy(key string, stuck int) error {
	return fmt.Errorf("NFS server %s has %d calls stuck past their deadline, so no more are sent to it until one returns; check the server and the network to it: %w",
		key, stuck, ErrBusy)
}

// drop forgets key's state once nobody holds or waits for a slot (l.mu held).
func (l *Limiter) drop(key string, ks *keyState) {
	if ks.held == 0 && ks.waiters == 0 && l.keys[key] == ks {
		delete(l.keys, key)
	}
}

// wakeAll wakes every waiter of ks so it re-checks the slots (l.mu held).
func (ks *keyState) wakeAll() {
	if ks.wake != nil {
		close(ks.wake)
		ks.wake = nil
	}
}

// Overran marks the holder as stuck past its deadline (so further Acquires fail fast instead of
// queueing behind it). It does nothing after Release or a first Overran.
func (s *Slot) Overran() {
	if s == nil || s.l == nil {
		return
	}
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	if s.overran || s.released {
		return
	}
	s.overran = true
	s.ks.overran++
	metrics.CallsStuck.WithLabelValues(s.key).Inc()
	s.ks.wakeAll()
}

// Release frees the slot (idempotent).
func (s *Slot) Release() {
	if s == nil || s.l == nil {
		return
	}
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	s.ks.held--
	if s.overran {
		s.ks.overran--
		metrics.CallsStuck.WithLabelValues(s.key).Dec()
	}
	s.ks.wakeAll()
	s.l.drop(s.key, s.ks)
}

// Stuck reports how many calls of key are past their deadline and still running (for metrics and
// NodeGetStorageHealth).
func (l *Limiter) Stuck(key string) int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks := l.keys[key]; ks != nil {
		return ks.overran
	}
	return 0
}

// Bounded is mount.Bounded holding a slot of key for as long as fn really runs: the slot is taken
// before fn starts (Acquire's rules), marked Overran when the deadline passes, and released only when
// fn returns. The deadline (the smaller of ctx's and timeout) covers the wait for a slot too. A nil
// Limiter is plain mount.Bounded.
func (l *Limiter) Bounded(ctx context.Context, key string, timeout time.Duration, what string, fn func() error) error {
	_, err := LimitedOwned(l, ctx, key, timeout, what, func() (struct{}, error) { return struct{}{}, fn() }, nil)
	return err
}

// LimitedValue is BoundedValue holding a slot of key while fn runs (see Limiter.Bounded; methods
// cannot have type parameters).
func LimitedValue[T any](l *Limiter, ctx context.Context, key string, timeout time.Duration, what string, fn func() (T, error)) (T, error) {
	return LimitedOwned(l, ctx, key, timeout, what, fn, nil)
}

// LimitedOwned is BoundedOwned holding a slot of key while fn runs (see Limiter.Bounded): if fn
// succeeds only after the caller gave up, drop is called with its value. A nil Limiter is plain
// BoundedOwned.
func LimitedOwned[T any](l *Limiter, ctx context.Context, key string, timeout time.Duration, what string, fn func() (T, error), drop func(T)) (T, error) {
	var zero T
	if l == nil {
		return BoundedOwned(ctx, timeout, what, fn, drop)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	slot, err := l.Acquire(ctx, key)
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return zero, fmt.Errorf("%s: %w", what, err)
		}
		return zero, fmt.Errorf("%s: %w after %v: %w", what, ErrTimeout, timeout, err)
	}
	// The slot is freed when fn has really returned, whatever the caller did.
	return boundedCall(ctx, timeout, what, fn, drop, slot.Release, slot.Overran)
}
