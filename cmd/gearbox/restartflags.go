package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// restartFlags are Docker's --restart and the back-off's tuning.
type restartFlags struct {
	policy     string
	delay      time.Duration
	factor     float64
	maxDelay   time.Duration
	resetAfter time.Duration
}

func addRestartFlags(fs *pflag.FlagSet) *restartFlags {
	f := &restartFlags{}
	fs.StringVar(&f.policy, "restart", "", "restart policy: no, on-failure[:N] (at most N restarts), always, unless-stopped")
	fs.DurationVar(&f.delay, "restart-delay", 0, "wait before the first restart; it grows by --restart-factor (default 100ms)")
	fs.Float64Var(&f.factor, "restart-factor", 0, "back-off factor between restarts, at least 1 (default 2)")
	fs.DurationVar(&f.maxDelay, "restart-max-delay", 0, "longest wait between restarts (default 1m)")
	fs.DurationVar(&f.resetAfter, "restart-reset-after", 0, "a run this long starts the back-off again (default 10s)")
	return f
}

var restartModeNames = map[string]typesv1.RestartMode{
	"no": typesv1.RestartMode_RESTART_MODE_NO, "on-failure": typesv1.RestartMode_RESTART_MODE_ON_FAILURE,
	"always": typesv1.RestartMode_RESTART_MODE_ALWAYS, "unless-stopped": typesv1.RestartMode_RESTART_MODE_UNLESS_STOPPED,
}

// apply sets req's restart policy. The agent checks it again (with the
// field named); this catches what only the flag's text shows.
func (f *restartFlags) apply(req *agentv1.LaunchContainerRequest) error {
	tuned := f.delay != 0 || f.factor != 0 || f.maxDelay != 0 || f.resetAfter != 0
	if f.policy == "" && !tuned {
		return nil
	}
	name, n, hasN := strings.Cut(f.policy, ":")
	mode, ok := restartModeNames[name]
	if !ok {
		return fmt.Errorf("--restart %q: give no, on-failure[:N], always or unless-stopped", f.policy)
	}
	p := &typesv1.RestartPolicy{Mode: mode, Factor: f.factor}
	if hasN {
		if mode != typesv1.RestartMode_RESTART_MODE_ON_FAILURE {
			return fmt.Errorf("--restart %q: only on-failure takes a retry count", f.policy)
		}
		v, err := strconv.ParseInt(n, 10, 32)
		if err != nil || v < 0 {
			return fmt.Errorf("--restart %q: the retry count must be a whole number, 0 (no bound) or more", f.policy)
		}
		p.MaxRetries = int32(v)
	}
	if tuned && mode == typesv1.RestartMode_RESTART_MODE_NO {
		return fmt.Errorf("--restart-delay, --restart-factor, --restart-max-delay and --restart-reset-after need --restart on-failure, always or unless-stopped")
	}
	for _, d := range []struct {
		v   time.Duration
		dst **durationpb.Duration
	}{{f.delay, &p.Delay}, {f.maxDelay, &p.MaxDelay}, {f.resetAfter, &p.ResetAfter}} {
		if d.v != 0 {
			*d.dst = durationpb.New(d.v)
		}
	}
	req.RestartPolicy = p
	return nil
}

// restarts says whether req's policy may restart it.
func restarts(req *agentv1.LaunchContainerRequest) bool {
	m := req.GetRestartPolicy().GetMode()
	return m != typesv1.RestartMode_RESTART_MODE_UNSPECIFIED && m != typesv1.RestartMode_RESTART_MODE_NO
}

// printRestarts adds a container's restart policy and state to inspect.
func printRestarts(row func(k, v string), ct *agentv1.Container) {
	p := ct.GetRestartPolicy()
	if p == nil {
		return
	}
	desc := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(p.GetMode().String(), "RESTART_MODE_")), "_", "-")
	if p.GetMaxRetries() > 0 {
		desc += fmt.Sprintf(":%d", p.GetMaxRetries())
	}
	row("Restart policy", desc)
	row("Restart count", strconv.FormatUint(uint64(ct.GetRestartCount()), 10))
	if e := ct.GetLastExit(); e != nil {
		last := e.GetState().String()
		if e.ExitCode != nil {
			last += fmt.Sprintf(" (exit code %d)", e.GetExitCode())
		}
		if e.GetReason() != typesv1.Reason_REASON_UNSPECIFIED {
			last += ", " + e.GetReason().String()
		}
		last += ": " + e.GetMessage()
		if e.Time != nil {
			last += " at " + e.Time.AsTime().Local().Format(time.RFC3339)
		}
		row("Last exit", last)
	}
	if ct.NextRestartAt != nil {
		row("Next restart", ct.NextRestartAt.AsTime().Local().Format(time.RFC3339Nano))
	}
}
