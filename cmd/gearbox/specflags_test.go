package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func specFrom(t *testing.T, args ...string) (*agentv1.LaunchContainerRequest, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	s := addSpecFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	req := &agentv1.LaunchContainerRequest{}
	return req, s.apply(req)
}

func TestSpecFlags(t *testing.T) {
	t.Setenv("FROM_SHELL", "yes")
	got, err := specFrom(t, "-e", "A=1", "-e", "FROM_SHELL", "-e", "UNSET_HERE_4711", "-u", "1000", "-w", "/srv", "--entrypoint", "",
		"-l", "team=core", "--runtime", "crun", "--cpus", "0.5", "-m", "64m", "--pids", "10",
		"--log-driver", "logrotate", "--log-opt", "max-files=2", "--stop-timeout", "7", "--pull", "always")
	if err != nil {
		t.Fatal(err)
	}
	want := &agentv1.LaunchContainerRequest{Env: []string{"A=1", "FROM_SHELL=yes"}, User: proto.String("1000"), WorkingDir: proto.String("/srv"),
		Entrypoint: &agentv1.StringList{}, Labels: map[string]string{"team": "core"}, Runtime: "crun",
		Resources: &agentv1.Resources{Cpus: 0.5, Memory: 64 << 20, Pids: 10}, Log: &agentv1.LogOptions{Driver: "logrotate", MaxFiles: 2},
		KillPolicy: &typesv1.KillPolicy{GracePeriod: durationpb.New(7 * time.Second)}, PullPolicy: typesv1.PullPolicy_PULL_ALWAYS}
	if !proto.Equal(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
	// Not given: as the image says, no kill policy, the default pull.
	got, err = specFrom(t)
	if err != nil || !proto.Equal(got, &agentv1.LaunchContainerRequest{}) {
		t.Errorf("no flags: %v %v", got, err)
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"--pull", "sometimes"}}, {[]string{"--stop-timeout", "-1"}}, {[]string{"--cpus", "x"}}, {[]string{"--log-opt", "colour=red"}},
	} {
		if _, err := specFrom(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("%v: %v, want an error naming the flag", tc.args, err)
		}
	}
	if got, _ := specFrom(t, "--pull", "missing"); got.PullPolicy != typesv1.PullPolicy_PULL_IF_NOT_PRESENT {
		t.Errorf("--pull missing (Docker's word): %v", got.PullPolicy)
	}
}

// run and task launch take the same container flags.
func TestRunAndTaskLaunchShareFlags(t *testing.T) {
	names := func(fs *pflag.FlagSet) map[string]bool {
		out := map[string]bool{}
		fs.VisitAll(func(f *pflag.Flag) { out[f.Name] = true })
		return out
	}
	spec := pflag.NewFlagSet("spec", pflag.ContinueOnError)
	addSpecFlags(spec)
	run, task := names(newRunCmd().Flags()), map[string]bool{}
	for _, c := range newTaskCmd().Commands() {
		if c.Name() == "launch" {
			task = names(c.Flags())
		}
	}
	for n := range names(spec) {
		if !run[n] || !task[n] {
			t.Errorf("--%s: run has it %v, task launch %v", n, run[n], task[n])
		}
	}
	for _, n := range []string{"env", "user", "workdir", "entrypoint", "label", "runtime", "cpus", "memory", "pids", "log-driver", "log-opt", "stop-timeout", "pull"} {
		if !task[n] {
			t.Errorf("task launch lacks --%s", n)
		}
	}
}
