package master

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestParseRate(t *testing.T) {
	for in, every := range map[string]time.Duration{
		"1/10mins": 10 * time.Minute, "5/1secs": 200 * time.Millisecond, "1/2s": 2 * time.Second, "2/1hrs": 30 * time.Minute, " 1/1days ": 24 * time.Hour,
	} {
		l, err := ParseRate(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if l.Limit() != rate.Every(every) || l.Burst() != 1 {
			t.Errorf("%q: limit %v burst %d, want every %s burst 1", in, l.Limit(), l.Burst(), every)
		}
	}
	if l, err := ParseRate(""); l != nil || err != nil {
		t.Errorf("empty: %v %v", l, err)
	}
	for _, bad := range []string{"1", "0/1secs", "-1/1secs", "x/1secs", "1/", "1/10lightyears", "1/0secs", "1/-5s", "5/1ns", "2/1ns", "1001/1us", "1/99999999999999999999weeks"} {
		if _, err := ParseRate(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"1/10mins", "5/1secs", "1/2s", "", "1/", "5/1ns", "1/1ns", "3/10ns", "1/1.5weeks", "1/99999999999999999999weeks"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseRate(s)
		if err != nil {
			return
		}
		if l == nil {
			if strings.TrimSpace(s) != "" {
				t.Fatalf("%q: no limiter and no error", s)
			}
			return
		}
		// An accepted rate is a finite, positive one: never rate.Inf (no
		// limit at all) nor zero, with one removal at a time.
		if l.Limit() == rate.Inf || !(l.Limit() > 0) || l.Burst() != 1 {
			t.Fatalf("%q: limit %v burst %d", s, l.Limit(), l.Burst())
		}
		// And it is N per DURATION, to the nanosecond the interval is cut to.
		ns, ds, _ := strings.Cut(strings.TrimSpace(s), "/")
		n, _ := strconv.Atoi(strings.TrimSpace(ns))
		d, err := parseMesosDuration(strings.TrimSpace(ds))
		if err != nil {
			t.Fatalf("%q accepted, but its duration does not parse: %v", s, err)
		}
		// The interval is d/n cut to whole nanoseconds, read back through a
		// float64 rate: allow the cut (< 1 ns per removal) and float error.
		every := float64(time.Second) / float64(l.Limit())
		slack := float64(d) * 1e-9
		if diff := float64(d) - every*float64(n); every < 0.5 || diff < -slack || diff >= float64(n)+slack {
			t.Fatalf("%q: one every %.0f ns, want %d every %s", s, every, n, d)
		}
	})
}

func TestValidateTLSAndRoles(t *testing.T) {
	base := DefaultConfig()
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = "0.0.0.0:5050" }, "reachable from other hosts"},
		{func(c *Config) { c.Listen = "10.0.0.1:5050" }, "--insecure"},
		{func(c *Config) { c.TLSCert = "/x.crt" }, "go together"},
		{func(c *Config) { c.AgentCNs = []string{"a1"} }, "agent_cn, readonly_cn and operator_cn (--agent-cn, --readonly-cn, --operator-cn) name certificates: give tls_cert"},
		{func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA, c.OperatorCNs = "a", "b", "c", []string{" "} }, "empty common name"},
		{func(c *Config) { c.SubscriberLag = c.EventBuffer + 1 }, "subscriber_lag (--subscriber-lag) must be between 1 and event_buffer (--event-buffer)"},
		{func(c *Config) { c.Socket = "" }, "nothing could use the master"},
		{func(c *Config) { c.Socket = "run/m.sock" }, "absolute path"},
	} {
		c := base
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", c, err, tc.want)
		}
	}
	for _, ok := range []func(*Config){
		func(c *Config) {},
		func(c *Config) { c.Listen = "localhost:5050" },
		func(c *Config) { c.Listen = "[::1]:5050" },
		func(c *Config) { c.Listen, c.Insecure = "0.0.0.0:5050", true },
		func(c *Config) { c.Listen, c.TLSCert, c.TLSKey, c.TLSClientCA = "0.0.0.0:5050", "a", "b", "c" },
	} {
		c := base
		ok(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
