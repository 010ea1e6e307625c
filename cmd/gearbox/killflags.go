package main

import (
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// killFlags: --stop-timeout SECONDS, Docker's name for the kill policy's
// grace period: a kill that names no signal sends SIGTERM, then SIGKILL
// once it has passed.
type killFlags struct {
	fs      *pflag.FlagSet
	seconds int
}

func addKillFlags(fs *pflag.FlagSet) *killFlags {
	f := &killFlags{fs: fs}
	fs.IntVar(&f.seconds, "stop-timeout", 0, "kill policy: a kill sends SIGTERM, then SIGKILL after this many seconds (default: SIGKILL at once)")
	return f
}

func (f *killFlags) apply(req *agentv1.LaunchContainerRequest) error {
	if !f.fs.Changed("stop-timeout") {
		return nil
	}
	if f.seconds < 0 {
		return flagErr("stop-timeout", "%d: give a number of seconds, 0 or more", f.seconds)
	}
	req.KillPolicy = &typesv1.KillPolicy{GracePeriod: durationpb.New(time.Duration(f.seconds) * time.Second)}
	return nil
}
