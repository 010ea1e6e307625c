package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// specFlags are the flags of a container spec that run and task launch
// share: everything a container is launched with but how run attaches to
// it (-d, -i, -t, --rm, --name) and where task launch places it. A task
// launched with them is launched exactly as run would launch it.
//
// A feature of the spec with flags of its own (health checks, restart
// policy, networks, ...) lives in its own <feature>flags.go as
// addXFlags(fs) *xFlags and (*xFlags).apply(req) error, and is listed in
// specFeatures: run and task launch both get it with no more wiring.
type specFlags struct {
	fs                                 *pflag.FlagSet
	runtime, workdir, user, entrypoint string
	env, labels                        []string
	logDriver                          string
	logOpts                            []string
	privileged                         bool
	res                                resourceFlags
	// features are the appliers of specFeatures, in order.
	features []specApplier
}

// specApplier fills a launch request from its feature's flags.
type specApplier interface {
	apply(req *agentv1.LaunchContainerRequest) error
}

// specFeatures add one feature's flags to run and task launch alike.
var specFeatures = []func(*pflag.FlagSet) specApplier{
	func(fs *pflag.FlagSet) specApplier { return addKillFlags(fs) },
	func(fs *pflag.FlagSet) specApplier { return addPullFlags(fs) },
	func(fs *pflag.FlagSet) specApplier { return addHealthFlags(fs) },
	func(fs *pflag.FlagSet) specApplier { return addRestartFlags(fs) },
	func(fs *pflag.FlagSet) specApplier { return addNetworkFlags(fs) },
}

func addSpecFlags(f *pflag.FlagSet) *specFlags {
	s := &specFlags{fs: f}
	f.StringVar(&s.runtime, "runtime", "", "runtime profile (default: the agent's default)")
	f.StringArrayVarP(&s.env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass this shell's)")
	f.StringVarP(&s.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&s.user, "user", "u", "", "user (name|uid[:group|gid])")
	f.StringVar(&s.entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringArrayVarP(&s.labels, "label", "l", nil, "set a label (KEY=VALUE)")
	s.res.add(f, true)
	f.BoolVar(&s.privileged, "privileged", false, "all capabilities and devices, no seccomp (if the agent allows it)")
	f.StringVar(&s.logDriver, "log-driver", "", "logger: sandbox, logrotate or one the agent's config names")
	f.StringArrayVar(&s.logOpts, "log-opt", nil, "logger option: max-size=SIZE, max-files=N, mode=block|drop")
	for _, add := range specFeatures {
		s.features = append(s.features, add(f))
	}
	return s
}

// apply fills req (image and command already set) from the flags.
func (s *specFlags) apply(req *agentv1.LaunchContainerRequest) error {
	req.Runtime, req.Privileged = s.runtime, s.privileged
	if s.fs.Changed("entrypoint") {
		req.Entrypoint = &agentv1.StringList{}
		if s.entrypoint != "" {
			req.Entrypoint.Values = []string{s.entrypoint}
		}
	}
	for _, e := range s.env {
		if !strings.Contains(e, "=") {
			if v, ok := os.LookupEnv(e); ok {
				e = e + "=" + v
			} else {
				continue // Docker's rule: an unset KEY is left out
			}
		}
		req.Env = append(req.Env, e)
	}
	if s.fs.Changed("workdir") {
		req.WorkingDir = &s.workdir
	}
	if s.fs.Changed("user") {
		req.User = &s.user
	}
	lo, err := parseLogOpts(s.logDriver, s.logOpts)
	if err != nil {
		return err
	}
	req.Log = lo
	if req.Resources, err = s.res.proto(); err != nil {
		return err
	}
	for _, l := range s.labels {
		k, v, _ := strings.Cut(l, "=")
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = v
	}
	for _, f := range s.features {
		if err := f.apply(req); err != nil {
			return err
		}
	}
	return nil
}

// flagErr is an error in the value of --flag.
func flagErr(flag string, format string, a ...any) error {
	return fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...))
}
