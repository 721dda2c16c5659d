package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/keylock"
)

// releaseTimeout bounds removing the finalizer after a clone, which runs even when the clone's own
// context has ended (a copy that timed out must not leave the source undeletable).
const releaseTimeout = 30 * time.Second

// cloneGuard keeps CloneFinalizer on a source claim while a copy from it may be running in this
// process, so the source (and, with reclaim policy Delete, its directory) cannot go away under the
// copy. It is added before the core's Create and removed once no clone of that source is in flight
// here: when the last one returns with a final answer, or, for a finalizer a crashed controller left
// behind, when the source is being deleted and no Pending claim still waits to clone it (the rule of
// csi-provisioner's CloningProtectionController).
type cloneGuard struct {
	client kubernetes.Interface
	locks  keylock.Locks // per source: the in-flight set and the finalizer change together

	mu       sync.Mutex
	inflight map[types.NamespacedName]map[types.UID]bool // source claim -> clone claims
}

func newCloneGuard(client kubernetes.Interface) *cloneGuard {
	return &cloneGuard{client: client, inflight: map[types.NamespacedName]map[types.UID]bool{}}
}

// acquire records the clone as in flight and makes sure the source carries the finalizer.
func (g *cloneGuard) acquire(ctx context.Context, src types.NamespacedName, clone types.UID) error {
	unlock, err := g.locks.Lock(ctx, src.String())
	if err != nil {
		return err
	}
	defer unlock()
	g.mu.Lock()
	set := g.inflight[src]
	if set == nil {
		set = map[types.UID]bool{}
		g.inflight[src] = set
	}
	already := set[clone] // a retry of a clone whose copy may still run (ProvisioningInBackground)
	set[clone] = true
	g.mu.Unlock()
	if err := g.update(ctx, src, true); err != nil {
		if !already {
			g.forget(src, clone)
		}
		return err
	}
	return nil
}

// release ends the clone's hold on src unless keep (its copy may still be running) and removes the
// finalizer when no clone of src is in flight any more. A failure is logged, not returned: the clone
// itself is done, and a finalizer left behind is removed when the source is deleted.
func (g *cloneGuard) release(ctx context.Context, src types.NamespacedName, clone types.UID, keep bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	logger := klog.FromContext(ctx)
	unlock, err := g.locks.Lock(ctx, src.String())
	if err != nil {
		logger.Error(err, "Clone source's finalizer left in place", "PVC", src, "finalizer", CloneFinalizer)
		return
	}
	defer unlock()
	if !keep {
		g.forget(src, clone)
	}
	if g.busy(src) {
		return
	}
	if err := g.update(ctx, src, false); err != nil {
		logger.Error(err, "Clone source's finalizer left in place", "PVC", src, "finalizer", CloneFinalizer)
	}
}

// errWaiting: a Pending claim may still clone the source, so its finalizer stays for now.
var errWaiting = errors.New("a Pending claim still clones it")

// releaseIdle removes the finalizer from a source being deleted when no clone of it is in flight here
// and waiting reports no Pending claim that clones it. It returns errWaiting (to be retried later)
// while such a claim exists.
func (g *cloneGuard) releaseIdle(ctx context.Context, src types.NamespacedName, waiting func() bool) error {
	unlock, err := g.locks.Lock(ctx, src.String())
	if err != nil {
		return err
	}
	defer unlock()
	if g.busy(src) {
		return nil // the clone in flight removes it when it returns
	}
	if waiting() {
		return errWaiting
	}
	return g.update(ctx, src, false)
}

func (g *cloneGuard) busy(src types.NamespacedName) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.inflight[src]) > 0
}

func (g *cloneGuard) forget(src types.NamespacedName, clone types.UID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.inflight[src], clone)
	if len(g.inflight[src]) == 0 {
		delete(g.inflight, src)
	}
}

// update adds or removes the finalizer on the current object, retrying on write conflicts.
func (g *cloneGuard) update(ctx context.Context, src types.NamespacedName, add bool) error {
	claims := g.client.CoreV1().PersistentVolumeClaims(src.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := claims.Get(ctx, src.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && !add {
			return nil
		}
		if err != nil {
			return fmt.Errorf("getting clone source %s: %w", src, err)
		}
		has := slices.Contains(c.Finalizers, CloneFinalizer)
		if has == add {
			return nil
		}
		if add {
			if c.DeletionTimestamp != nil {
				return fmt.Errorf("clone source %s is being deleted", src)
			}
			c.Finalizers = append(c.Finalizers, CloneFinalizer)
		} else {
			c.Finalizers = slices.DeleteFunc(c.Finalizers, func(f string) bool { return f == CloneFinalizer })
		}
		if _, err := claims.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsNotFound(err) && !add {
				return nil
			}
			return err
		}
		klog.FromContext(ctx).V(2).Info("Clone source finalizer updated", "PVC", src, "finalizer", CloneFinalizer, "added", add)
		return nil
	})
}

// clonesPending reports whether any claim among claims is Pending and clones the source src: a claim
// that will still copy from it.
func clonesPending(claims []*v1.PersistentVolumeClaim, src types.NamespacedName) bool {
	for _, c := range claims {
		if c.Status.Phase != v1.ClaimPending && c.Status.Phase != "" {
			continue
		}
		if r := dataSourceOf(c); r != nil && r.kind == kindClaim && r.group == "" && r.namespace == src.Namespace && r.name == src.Name {
			return true
		}
	}
	return false
}
