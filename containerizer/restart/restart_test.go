package restart

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
)

func exit(state containerizer.TaskState, reason containerizer.Reason, code int32) containerizer.ProcessExit {
	return containerizer.ProcessExit{State: state, Reason: reason, ExitCode: &code}
}

var (
	exit0    = exit(containerizer.TaskFinished, containerizer.ReasonCommandExited, 0)
	exit1    = exit(containerizer.TaskFailed, containerizer.ReasonCommandExited, 1)
	oom      = exit(containerizer.TaskFailed, containerizer.Reason(7), 137) // REASON_CONTAINER_LIMITATION_MEMORY
	userKill = exit(containerizer.TaskKilled, containerizer.ReasonTaskKilled, 137)
	// A kill gearbox made for a reason of its own (a failed health check).
	healthKill = exit(containerizer.TaskKilled, containerizer.Reason(18), 137)
	lost       = containerizer.ProcessExit{State: containerizer.TaskLost, Reason: containerizer.ReasonContainerVanished}
)

func TestDecide(t *testing.T) {
	onFailure3 := containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, MaxRetries: 3}
	for _, tc := range []struct {
		name   string
		p      containerizer.RestartPolicy
		e      containerizer.ProcessExit
		count  int
		expect bool
	}{
		{"no policy", containerizer.RestartPolicy{}, exit1, 0, false},
		{"no", containerizer.RestartPolicy{Mode: containerizer.RestartNo}, exit1, 0, false},
		{"on-failure after exit 1", onFailure3, exit1, 0, true},
		{"on-failure third restart", onFailure3, exit1, 2, true},
		{"on-failure exhausted", onFailure3, exit1, 3, false},
		{"on-failure unbounded", containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure}, exit1, 1000, true},
		{"on-failure after exit 0", onFailure3, exit0, 0, false},
		{"on-failure after OOM", onFailure3, oom, 0, true},
		{"on-failure after a health kill", onFailure3, healthKill, 0, true},
		{"on-failure after a user kill", onFailure3, userKill, 0, false},
		{"always after exit 0", containerizer.RestartPolicy{Mode: containerizer.RestartAlways}, exit0, 50, true},
		{"always after a user kill", containerizer.RestartPolicy{Mode: containerizer.RestartAlways}, userKill, 0, false},
		{"unless-stopped after exit 1", containerizer.RestartPolicy{Mode: containerizer.RestartUnlessStopped}, exit1, 0, true},
		{"unless-stopped after a user kill", containerizer.RestartPolicy{Mode: containerizer.RestartUnlessStopped}, userKill, 0, false},
		{"always after vanishing", containerizer.RestartPolicy{Mode: containerizer.RestartAlways}, lost, 0, false},
	} {
		got, _ := Decide(tc.p, tc.e, time.Second, tc.count, 0)
		if got != tc.expect {
			t.Errorf("%s: restart = %v, want %v", tc.name, got, tc.expect)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := containerizer.RestartPolicy{Mode: containerizer.RestartAlways}
	// Docker's: 100ms doubling to a minute, reset by a 10s run.
	var prev time.Duration
	var got []time.Duration
	for range 12 {
		_, d := Decide(p, exit1, time.Second, 0, prev)
		got = append(got, d)
		prev = d
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond,
		25600 * time.Millisecond, 51200 * time.Millisecond, time.Minute, time.Minute}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if _, d := Decide(p, exit1, 10*time.Second, 0, time.Minute); d != DefaultDelay {
		t.Errorf("after a 10s run the delay is %v, want it reset to %v", d, DefaultDelay)
	}
	q := containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, Delay: time.Second, Factor: 3, MaxDelay: 5 * time.Second, ResetAfter: time.Minute}
	for _, tc := range []struct{ ran, prev, want time.Duration }{
		{time.Second, 0, time.Second},
		{time.Second, time.Second, 3 * time.Second},
		{time.Second, 3 * time.Second, 5 * time.Second},
		{59 * time.Second, 5 * time.Second, 5 * time.Second},
		{time.Minute, 5 * time.Second, time.Second},
	} {
		if d := Backoff(q, tc.ran, tc.prev); d != tc.want {
			t.Errorf("Backoff(ran %v, prev %v) = %v, want %v", tc.ran, tc.prev, d, tc.want)
		}
	}
	if d := Backoff(containerizer.RestartPolicy{Factor: 100, MaxDelay: MaxDuration, Delay: MaxDuration}, 0, MaxDuration); d != MaxDuration {
		t.Errorf("a delay that would overflow is %v, want the cap", d)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		p     containerizer.RestartPolicy
		field string // "" for valid
	}{
		{containerizer.RestartPolicy{}, ""},
		{containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, MaxRetries: 3, Delay: time.Second, Factor: 1, MaxDelay: time.Second}, ""},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, Delay: 5 * time.Minute}, ""}, // the cap follows a longer delay
		{containerizer.RestartPolicy{Mode: "sometimes"}, "restart_policy.mode"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, MaxRetries: -1}, "restart_policy.max_retries"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, MaxRetries: 2}, "restart_policy.max_retries"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartNo, MaxRetries: 2}, "restart_policy.max_retries"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, Delay: -time.Second}, "restart_policy.delay"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, MaxDelay: 48 * time.Hour}, "restart_policy.max_delay"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, ResetAfter: -1}, "restart_policy.reset_after"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, Factor: 0.5}, "restart_policy.factor"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, Factor: math.NaN()}, "restart_policy.factor"},
		{containerizer.RestartPolicy{Mode: containerizer.RestartAlways, Delay: time.Minute, MaxDelay: time.Second}, "restart_policy.delay"},
		{containerizer.RestartPolicy{Delay: time.Second}, "restart_policy"},
	} {
		err := Validate(tc.p)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v refused: %v", tc.p, err)
			}
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: err %v, want InvalidArgument naming %s", tc.p, err, tc.field)
		}
	}
}

func TestWords(t *testing.T) {
	p := containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, MaxRetries: 3}
	if s := String(p); s != "on-failure:3" {
		t.Errorf("String = %q", s)
	}
	if s := Count(p, 2); s != "restart 2 of 3" {
		t.Errorf("Count = %q", s)
	}
	if s := String(containerizer.RestartPolicy{}); s != "no" {
		t.Errorf("String of none = %q", s)
	}
}
