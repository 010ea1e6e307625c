// Package restart holds the restart policies' rules (Docker's --restart,
// with an exponential back-off as Docker's restart manager and Nomad's
// restart block have): whether a container's process that ended is started
// again, and after how long. It is pure logic; the containerizer owns the
// timers and the restarts themselves.
//
// The rules:
//
//   - a kill asked of gearbox (KillContainer, task kill: the container
//     ends TASK_KILLED with REASON_TASK_KILLED) is never restarted, by any
//     policy;
//   - any other end counts as a failure for on-failure unless the process
//     exited with status 0: a signal, an OOM kill (REASON_CONTAINER_LIMITATION_MEMORY)
//     and a kill gearbox made on its own for a reason of its own (a failed
//     health check ends TASK_KILLED with a health reason) are failures;
//   - on-failure:N restarts at most N times in the container's life (as
//     Docker: the count is not reset by a long run); always and
//     unless-stopped restart after any end, exit 0 included;
//   - the back-off: Delay before the first restart, then Delay*Factor,
//     Delay*Factor², … at most MaxDelay; a process that ran ResetAfter or
//     longer starts the back-off again at Delay.
package restart

import (
	"fmt"
	"math"
	"time"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
)

// Docker's restart manager's values.
const (
	DefaultDelay      = 100 * time.Millisecond
	DefaultFactor     = 2.0
	DefaultMaxDelay   = time.Minute
	DefaultResetAfter = 10 * time.Second
	// MaxDuration bounds every duration of a policy.
	MaxDuration = 24 * time.Hour
)

// Validate refuses a policy no restart could follow, with InvalidArgument
// naming the field (as the Agent API spells it).
func Validate(p containerizer.RestartPolicy) error {
	bad := func(format string, a ...any) error { return errs.New(errdefs.ErrInvalidArgument, format, a...) }
	switch p.Mode {
	case "", containerizer.RestartNo, containerizer.RestartOnFailure, containerizer.RestartAlways, containerizer.RestartUnlessStopped:
	default:
		return bad("restart_policy.mode %q: give no, on-failure, always or unless-stopped", p.Mode)
	}
	if p.MaxRetries < 0 {
		return bad("restart_policy.max_retries %d: give 0 (no bound) or more", p.MaxRetries)
	}
	if p.MaxRetries > 0 && p.Mode != containerizer.RestartOnFailure {
		return bad("restart_policy.max_retries %d: only mode on-failure takes a retry count, not %s", p.MaxRetries, mode(p))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"delay", p.Delay}, {"max_delay", p.MaxDelay}, {"reset_after", p.ResetAfter}} {
		if d.v < 0 || d.v > MaxDuration {
			return bad("restart_policy.%s %s: give a duration from 0 (the default) to %s", d.name, d.v, MaxDuration)
		}
	}
	if p.Factor != 0 && (math.IsNaN(p.Factor) || p.Factor < 1 || p.Factor > 100) {
		return bad("restart_policy.factor %v: give 1 (a constant delay) to 100, or 0 for the default %v", p.Factor, DefaultFactor)
	}
	if q := WithDefaults(p); q.Delay > q.MaxDelay {
		return bad("restart_policy.delay %s is longer than restart_policy.max_delay %s", q.Delay, q.MaxDelay)
	}
	if mode(p) == containerizer.RestartNo && (p.Delay != 0 || p.Factor != 0 || p.MaxDelay != 0 || p.ResetAfter != 0) {
		return bad("restart_policy: a back-off (delay, factor, max_delay, reset_after) needs a mode that restarts (on-failure, always, unless-stopped)")
	}
	return nil
}

func mode(p containerizer.RestartPolicy) containerizer.RestartMode {
	if p.Mode == "" {
		return containerizer.RestartNo
	}
	return p.Mode
}

// Enabled says whether the policy may ever restart.
func Enabled(p containerizer.RestartPolicy) bool { return mode(p) != containerizer.RestartNo }

// WithDefaults fills the zero fields of the back-off.
func WithDefaults(p containerizer.RestartPolicy) containerizer.RestartPolicy {
	if p.Delay == 0 {
		p.Delay = DefaultDelay
	}
	if p.Factor == 0 {
		p.Factor = DefaultFactor
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = max(DefaultMaxDelay, p.Delay)
	}
	if p.ResetAfter == 0 {
		p.ResetAfter = DefaultResetAfter
	}
	return p
}

// KilledByUser says whether an end was a kill asked of gearbox.
func KilledByUser(e containerizer.ProcessExit) bool {
	return e.State == containerizer.TaskKilled && e.Reason == containerizer.ReasonTaskKilled
}

// Decide says whether a process that ended as e, after running for ran, is
// started again, given the restarts so far (count) and the delay of the
// last one (prev; 0 if none), and after which delay.
func Decide(p containerizer.RestartPolicy, e containerizer.ProcessExit, ran time.Duration, count int, prev time.Duration) (bool, time.Duration) {
	switch e.State {
	case containerizer.TaskFinished, containerizer.TaskFailed, containerizer.TaskKilled:
	default:
		return false, 0 // lost, gone: there is nothing to start again
	}
	if KilledByUser(e) {
		return false, 0
	}
	switch mode(p) {
	case containerizer.RestartAlways, containerizer.RestartUnlessStopped:
	case containerizer.RestartOnFailure:
		if e.State == containerizer.TaskFinished || (p.MaxRetries > 0 && count >= p.MaxRetries) {
			return false, 0
		}
	default:
		return false, 0
	}
	return true, Backoff(p, ran, prev)
}

// Backoff is the delay before the next restart.
func Backoff(p containerizer.RestartPolicy, ran, prev time.Duration) time.Duration {
	p = WithDefaults(p)
	if prev <= 0 || ran >= p.ResetAfter {
		return p.Delay
	}
	next := time.Duration(float64(prev) * p.Factor)
	if next > p.MaxDelay || next <= 0 {
		return p.MaxDelay
	}
	return next
}

// Count describes restart n: "restart 2 of 3" for on-failure:3, else
// "restart 2".
func Count(p containerizer.RestartPolicy, n int) string {
	if p.MaxRetries > 0 {
		return fmt.Sprintf("restart %d of %d", n, p.MaxRetries)
	}
	return fmt.Sprintf("restart %d", n)
}

// String is the policy as Docker's --restart writes it.
func String(p containerizer.RestartPolicy) string {
	if p.MaxRetries > 0 {
		return fmt.Sprintf("%s:%d", mode(p), p.MaxRetries)
	}
	return string(mode(p))
}
