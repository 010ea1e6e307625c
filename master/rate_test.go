package master

import (
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
	for _, bad := range []string{"1", "0/1secs", "-1/1secs", "x/1secs", "1/", "1/10lightyears", "1/0secs", "1/-5s"} {
		if _, err := ParseRate(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"1/10mins", "5/1secs", "1/2s", "", "1/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ParseRate(s) // never panics
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
		{func(c *Config) { c.AgentCNs = []string{"a1"} }, "give --tls-cert"},
		{func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA, c.OperatorCNs = "a", "b", "c", []string{" "} }, "empty common name"},
		{func(c *Config) { c.SubscriberLag = c.EventBuffer + 1 }, "--subscriber-lag"},
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
