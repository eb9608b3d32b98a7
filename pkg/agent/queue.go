package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
)

// delQueueInterval is how often a running agent looks for queued releases:
// a plugin that found the agent unreachable just as it started serving must
// not leave its IP held until the next restart.
const delQueueInterval = 5 * time.Second

func (a *Agent) delQueue() agentapi.DelQueue {
	return agentapi.DelQueue{Dir: a.cfg.Paths.DelQueueDir()}
}

// replayDelQueue performs the releases the plugin queued while the agent was
// unreachable, removing each entry once its release is durable.
func (a *Agent) replayDelQueue() error {
	q := a.delQueue()
	entries, err := q.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Err != nil {
			// Kept for a person to read, out of the way of later replays.
			a.log.Error("unreadable queued DEL moved aside", zap.String("path", e.Path+".bad"), zap.Error(e.Err))
			if err := os.Rename(e.Path, e.Path+".bad"); err != nil {
				errs = append(errs, fmt.Errorf("move aside %s: %w", e.Path, err))
			}
			continue
		}
		if err := a.replayDel(q, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) replayDel(q agentapi.DelQueue, e agentapi.QueueEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := ipam.Key{Network: e.Network, ContainerID: e.ContainerID, IfName: e.IfName}
	log := a.log.With(zap.String("container_id", e.ContainerID), zap.String("ifname", e.IfName), zap.String("ip", e.IP),
		zap.Time("queued_at", e.QueuedAt))
	if al, ok := a.alloc.Get(key); ok && al.Since.After(e.QueuedAt) {
		// The runtime added the attachment again after that DEL.
		log.Warn("queued DEL is older than the endpoint's allocation; endpoint kept", zap.Time("allocated_at", al.Since))
	} else {
		if err := a.release(key); err != nil {
			return fmt.Errorf("replay queued DEL of %s: %w", key, err)
		}
		log.Info("replayed DEL queued while the agent was unreachable")
	}
	return q.RemoveEntry(e)
}

// replayDelQueueEvery replays the queue until ctx ends.
func (a *Agent) replayDelQueueEvery(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func() {
		if err := a.replayDelQueue(); err != nil {
			a.log.Error("replay DEL queue", zap.Error(err))
		}
	})
}
