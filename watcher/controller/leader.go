package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// ErrLostLease is returned by Run when the Lease was lost while leading: the process should
// exit and start over as a follower rather than trust the in-memory state of its old term.
var ErrLostLease = errors.New("lost the leader election lease")

// runElected pushes only while holding the coordination/v1 Lease. The Lease is released on
// cancel (SIGTERM) so that the other replica takes over at once instead of after it expires.
func (c *Controller) runElected(ctx context.Context) error {
	le := c.opts.LeaderElection
	lease, renew, retry := le.LeaseDuration, le.RenewDeadline, le.RetryPeriod
	if lease <= 0 {
		lease = 15 * time.Second
	}
	if renew <= 0 {
		renew = 10 * time.Second
	}
	if retry <= 0 {
		retry = 2 * time.Second
	}
	electCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The push loop runs here, not in the callback, so that Run returns only after it ended.
	// The elector starts OnStartedLeading in a goroutine of its own: one that starts after the
	// elector already gave up finds its context cancelled and nobody listening, and does nothing.
	leading := make(chan context.Context, 1)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
			Client:     c.opts.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
		},
		LeaseDuration:   lease,
		RenewDeadline:   renew,
		RetryPeriod:     retry,
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				leading <- lctx
			},
			OnStoppedLeading: func() { c.setLeading(false) },
			OnNewLeader: func(id string) {
				if id != le.Identity {
					c.log.Info("following", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		elector.Run(electCtx)
	}()

	select {
	case <-runDone:
		return ctx.Err()
	case lctx := <-leading:
		c.log.Info("leading: this replica pushes to the edge", "identity", le.Identity)
		c.setLeading(true)
		leadErr := c.lead(lctx)
		c.setLeading(false)
		cancel()
		<-runDone
		switch {
		case leadErr != nil && !errors.Is(leadErr, context.Canceled):
			return leadErr
		case ctx.Err() != nil || c.opts.Once:
			return nil
		}
		return ErrLostLease
	}
}
