package keylock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSameKeySerializes(t *testing.T) {
	var l Locks
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.Lock(context.Background(), "vol")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("same key held by %d callers at once", maxInside.Load())
	}
	if l.Len() != 0 {
		t.Fatalf("%d keys left after all unlocked", l.Len())
	}
}

func TestDifferentKeysRunInParallel(t *testing.T) {
	var l Locks
	a, err := l.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b, err := l.Lock(ctx, "b")
	if err != nil {
		t.Fatalf("key b blocked by key a: %v", err)
	}
	b()
}

func TestWaitHonoursContext(t *testing.T) {
	var l Locks
	unlock, _ := l.Lock(context.Background(), "vol")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx, "vol"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	unlock()
	unlock() // a second release is harmless
	again, err := l.Lock(context.Background(), "vol")
	if err != nil {
		t.Fatal(err)
	}
	again()
	if l.Len() != 0 {
		t.Fatalf("%d keys left", l.Len())
	}
}
