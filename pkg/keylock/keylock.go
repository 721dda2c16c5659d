// Package keylock serializes work per key: calls on the same volume never overlap, calls on different
// volumes run in parallel. Waiting honours the caller's context, so a call stuck behind a hung NFS
// operation gives up at its own deadline instead of piling up.
package keylock

import (
	"context"
	"sync"
)

// Locks is a set of per-key mutexes. The zero value is ready to use.
type Locks struct {
	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	ch    chan struct{} // holds one token while locked
	users int           // holders and waiters; the entry is dropped at zero
}

// Lock takes the key's lock, waiting at most until ctx ends. The returned func releases it.
func (l *Locks) Lock(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	if l.keys == nil {
		l.keys = map[string]*entry{}
	}
	e := l.keys[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		l.keys[key] = e
	}
	e.users++
	l.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
	case <-ctx.Done():
		l.drop(key, e)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			l.drop(key, e)
		})
	}, nil
}

// Len reports how many keys are held or waited on (for tests and metrics).
func (l *Locks) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Locks) drop(key string, e *entry) {
	l.mu.Lock()
	e.users--
	if e.users == 0 {
		delete(l.keys, key)
	}
	l.mu.Unlock()
}
