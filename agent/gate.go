package agent

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gate is the agent's stop as its handlers see it: refuse new work once
// the agent stops, and end long calls (waits, follows, sessions) so that
// draining does not wait on them.
type gate struct {
	stopping atomic.Bool
	// streamsCtx ends long-lived calls (waits, follows) when the agent stops,
	// so that draining does not wait on them.
	streamsCtx context.Context
	endStreams context.CancelFunc
}

func newGate() *gate {
	g := &gate{}
	g.streamsCtx, g.endStreams = context.WithCancel(context.Background())
	return g
}

// stop refuses new work and ends long calls.
func (g *gate) stop() {
	g.stopping.Store(true)
	g.endStreams()
}

// admit refuses new work while the agent stops.
func (g *gate) admit() error {
	if g.stopping.Load() {
		return status.Error(codes.Unavailable, "the agent is stopping: retry against the new agent")
	}
	return nil
}

// longCall derives the context of a call that can last: it ends with the
// caller or when the agent stops, whichever comes first.
func (g *gate) longCall(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.streamsCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// stoppingErr says so when a long call ended because the agent stops.
func (g *gate) stoppingErr(err error) error {
	if err != nil && g.streamsCtx.Err() != nil {
		return status.Error(codes.Unavailable, "the agent is stopping: retry against the new agent (containers keep running)")
	}
	return toStatus(err)
}
